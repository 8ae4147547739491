package harness

import "syscall"

// procAttr has the kernel kill a worker if the harness dies without cleaning up, so no
// worker outlives the run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
