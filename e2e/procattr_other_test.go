//go:build !linux

package e2e

import "syscall"

// procAttr: only Linux can tie a child's life to its parent; t.Cleanup kills workers.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
