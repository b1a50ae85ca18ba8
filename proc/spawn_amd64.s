//go:build linux

#include "textflag.h"

// func rawCloneVM(flags, stack, pidfd, arena uintptr) (pid uintptr, errno syscall.Errno)
//
// clone(2) with a new stack. The child, which shares the caller's memory
// (CLONE_VM), switches to stack and calls spawnChild(arena), which never
// returns; the caller gets the pid or the errno. Only this can run the child
// on a stack of its own: Go code cannot change its stack pointer, and with
// CLONE_VFORK a child that ran on the caller's stack would overwrite the
// frames the caller returns through.
TEXT ·rawCloneVM(SB),NOSPLIT,$0-48
	MOVQ	flags+0(FP), DI
	MOVQ	stack+8(FP), SI
	MOVQ	pidfd+16(FP), DX
	MOVQ	arena+24(FP), R12	// kept across the system call
	XORQ	R10, R10		// child_tid
	XORQ	R8, R8			// tls
	MOVQ	$56, AX			// SYS_clone
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	NEGQ	AX
	MOVQ	$0, pid+32(FP)
	MOVQ	AX, errno+40(FP)
	RET
ok:
	MOVQ	AX, pid+32(FP)
	MOVQ	$0, errno+40(FP)
	RET
child:
	SUBQ	$16, SP
	MOVQ	R12, 0(SP)
	// An indirect call: spawnChild may serve, and serving may clone
	// again, a cycle the linker's nosplit check would follow.
	MOVQ	$·spawnChild(SB), AX
	CALL	AX
	MOVL	$127, DI
	MOVL	$60, AX			// SYS_exit
	SYSCALL
	INT	$3
