package dir

import (
	"fmt"
	"os"
	"testing"
)

// envWorker names the worker a re-run test binary is to be (see workers):
// the tests of CompareAndSwap across processes and of crashes run the test
// binary again as their other processes.
const envWorker = "CAPLIN_DIR_WORKER"

func TestMain(m *testing.M) {
	if w := os.Getenv(envWorker); w != "" {
		f, ok := workers[w]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown worker %q\n", w)
			os.Exit(2)
		}
		if err := f(); err != nil {
			fmt.Fprintf(os.Stderr, "worker %s: %v\n", w, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// workers are the roles a re-run test binary can take, by envWorker.
var workers = map[string]func() error{}
