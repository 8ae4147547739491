package kubetest

import (
	"os"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/proc"
)

// waitDelay bounds how long a killed command's output pipes may stay open.
const waitDelay = 5 * time.Second

// startProcess starts a server (etcd or kube-apiserver) with its output in logPath.
func startProcess(name, bin, logPath string, args []string, onExit func(*proc.Process)) (*proc.Process, error) {
	return proc.Start(proc.Spec{Name: name, Path: bin, Args: args, Env: serverEnv(), LogPath: logPath, LogCommand: true, OnExit: onExit})
}

// serverEnv is the environment of etcd and kube-apiserver: the test's, without the
// variables that would point them at another cluster or change their behaviour.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "KUBECONFIG" || strings.HasPrefix(k, "ETCD_") || strings.HasPrefix(k, "ETCDCTL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// portClash reports whether the process died because a port was taken after we picked
// it, which is worth a retry with new ports.
func portClash(p *proc.Process) bool {
	return p.Exited() && strings.Contains(p.Output(), "address already in use")
}
