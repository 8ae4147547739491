package e2e

import "syscall"

// procAttr has the kernel kill a worker if the test binary dies without cleaning up (a
// test timeout, say), so no worker outlives the run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
