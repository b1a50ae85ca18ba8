package sandbox

import (
	"fmt"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// capNames maps capability names, without "CAP_" and in lower case, to
// their numbers. The map is made on first use, not at start-up.
var capNames = sync.OnceValue(func() map[string]int {
	return map[string]int{
		"audit_control":      unix.CAP_AUDIT_CONTROL,
		"audit_read":         unix.CAP_AUDIT_READ,
		"audit_write":        unix.CAP_AUDIT_WRITE,
		"block_suspend":      unix.CAP_BLOCK_SUSPEND,
		"bpf":                unix.CAP_BPF,
		"checkpoint_restore": unix.CAP_CHECKPOINT_RESTORE,
		"chown":              unix.CAP_CHOWN,
		"dac_override":       unix.CAP_DAC_OVERRIDE,
		"dac_read_search":    unix.CAP_DAC_READ_SEARCH,
		"fowner":             unix.CAP_FOWNER,
		"fsetid":             unix.CAP_FSETID,
		"ipc_lock":           unix.CAP_IPC_LOCK,
		"ipc_owner":          unix.CAP_IPC_OWNER,
		"kill":               unix.CAP_KILL,
		"lease":              unix.CAP_LEASE,
		"linux_immutable":    unix.CAP_LINUX_IMMUTABLE,
		"mac_admin":          unix.CAP_MAC_ADMIN,
		"mac_override":       unix.CAP_MAC_OVERRIDE,
		"mknod":              unix.CAP_MKNOD,
		"net_admin":          unix.CAP_NET_ADMIN,
		"net_bind_service":   unix.CAP_NET_BIND_SERVICE,
		"net_broadcast":      unix.CAP_NET_BROADCAST,
		"net_raw":            unix.CAP_NET_RAW,
		"perfmon":            unix.CAP_PERFMON,
		"setfcap":            unix.CAP_SETFCAP,
		"setgid":             unix.CAP_SETGID,
		"setpcap":            unix.CAP_SETPCAP,
		"setuid":             unix.CAP_SETUID,
		"syslog":             unix.CAP_SYSLOG,
		"sys_admin":          unix.CAP_SYS_ADMIN,
		"sys_boot":           unix.CAP_SYS_BOOT,
		"sys_chroot":         unix.CAP_SYS_CHROOT,
		"sys_module":         unix.CAP_SYS_MODULE,
		"sys_nice":           unix.CAP_SYS_NICE,
		"sys_pacct":          unix.CAP_SYS_PACCT,
		"sys_ptrace":         unix.CAP_SYS_PTRACE,
		"sys_rawio":          unix.CAP_SYS_RAWIO,
		"sys_resource":       unix.CAP_SYS_RESOURCE,
		"sys_time":           unix.CAP_SYS_TIME,
		"sys_tty_config":     unix.CAP_SYS_TTY_CONFIG,
		"wake_alarm":         unix.CAP_WAKE_ALARM,
	}
})

// ParseCap returns the number of the capability name: "CAP_SYS_ADMIN",
// "cap_sys_admin" or "sys_admin".
func ParseCap(name string) (int, error) {
	n := strings.TrimPrefix(strings.ToLower(name), "cap_")
	if c, ok := capNames()[n]; ok && c <= lastCap() {
		return c, nil
	}
	return 0, fmt.Errorf("sandbox: unknown capability %q", name)
}

// AllCaps returns every capability the running kernel knows.
func AllCaps() []int {
	var cs []int
	for c := 0; c <= lastCap(); c++ {
		cs = append(cs, c)
	}
	return cs
}
