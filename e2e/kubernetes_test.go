package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/kubetest"
)

const chartDir = "../deploy/helm/kds-lease-manager"

// installChart installs the Helm chart into a fresh namespace of the real kube-apiserver,
// named for the cluster's stream and app. Nothing runs (no kubelet): it gives the
// StatefulSet, its ServiceAccount and the narrow Role, as in a real deployment.
func installChart(t *testing.T, c *cluster, kc *kubetest.Cluster) string {
	t.Helper()
	ns := kc.Namespace(t)
	if _, _, err := kc.Helm(t.Context(), "install", "kds-consumer", chartDir, "-n", ns,
		"--set", "namespace="+ns, "--set", "createNamespace=false",
		"--set", "consumer.stream.name="+c.stream, "--set", "consumer.app.name="+c.app); err != nil {
		t.Fatal(err)
	}
	return ns
}

// tokenKubeconfig is a kubeconfig that authenticates as the ServiceAccount sa, with a
// token from the real TokenRequest API.
func tokenKubeconfig(t *testing.T, kc *kubetest.Cluster, ns, sa string) string {
	t.Helper()
	token, err := kc.Token(t.Context(), ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	path, err := kc.KubeconfigFor(token)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func scaleStatefulSet(t *testing.T, kc *kubetest.Cluster, ns string, n int) time.Time {
	t.Helper()
	at := time.Now()
	if _, _, err := kc.Kubectl(t.Context(), "-n", ns, "scale", "statefulset", "kds-consumer", fmt.Sprintf("--replicas=%d", n)); err != nil {
		t.Fatal(err)
	}
	return at
}

// TestKubernetesReplicasDriveMaxLeases proves the Kubernetes worker-count source end to end:
// worker processes outside the cluster, authenticated with the chart's ServiceAccount token,
// read their StatefulSet's spec.replicas; `kubectl scale` to 5 makes the coordinator
// recompute 30/5 -> 6 while the 3 live workers cover for the 2 missing ones (target 10), the
// 2 new workers bring 6/6/6/6/6, and scaling back restores 10.
func TestKubernetesReplicasDriveMaxLeases(t *testing.T) {
	t.Parallel()
	kc := kubetest.Shared(t)
	c := newCluster(t, 30, defaultLeaseDuration)
	ns := installChart(t, c, kc)
	env := []string{"KUBECONFIG=" + tokenKubeconfig(t, kc, ns, "kds-consumer"), "WORKER_COUNT_SOURCE=kubernetes", "POD_NAMESPACE=" + ns}
	ids := names(5)
	var ws []*worker
	for _, id := range ids[:3] {
		ws = append(ws, c.startWorker(id, env...))
	}
	c.waitConverged(60*time.Second, 30, 3, 10, 0)

	scaled := scaleStatefulSet(t, kc, ns, 5)
	waitFor(t, 30*time.Second, "coordinator: 5 desired, max 6, target 10 while 3 are live", func() (bool, string) {
		r, err := c.coordinator()
		if err != nil || r == nil {
			return false, fmt.Sprint(err)
		}
		return r.WorkerCount == 5 && r.MaxLeasesPerWorker == 6 && r.LiveWorkers == 3 && r.TargetLeasesPerWorker == 10, coordString(r)
	})
	t.Logf("MEASURED kubectl scale --replicas=5 -> coordinator recomputed max 6: %s", time.Since(scaled))
	for _, id := range ids[3:] {
		ws = append(ws, c.startWorker(id, env...))
	}
	c.waitConverged(60*time.Second, 30, 5, 6, 0)
	c.waitBalanced(30*time.Second, 30, 6, ids...)

	scaled = scaleStatefulSet(t, kc, ns, 3)
	for _, w := range ws[3:] { // what the StatefulSet controller would do
		c.sigterm(w, 30*time.Second)
	}
	c.waitConverged(60*time.Second, 30, 3, 10, 0)
	t.Logf("MEASURED kubectl scale --replicas=3 (and the 2 pods stopped) -> 10/10/10: %s", time.Since(scaled))
}

// TestKubernetesDenialFallsBackToHeartbeats: a worker whose ServiceAccount may not read the
// StatefulSet says so clearly and falls back to counting live workers.
func TestKubernetesDenialFallsBackToHeartbeats(t *testing.T) {
	t.Parallel()
	kc := kubetest.Shared(t)
	c := newCluster(t, 4, defaultLeaseDuration)
	ns := installChart(t, c, kc)
	if _, _, err := kc.Kubectl(t.Context(), "-n", ns, "create", "serviceaccount", "nobody"); err != nil {
		t.Fatal(err)
	}
	w := c.startWorker("kds-consumer-0", "KUBECONFIG="+tokenKubeconfig(t, kc, ns, "nobody"),
		"WORKER_COUNT_SOURCE=kubernetes", "POD_NAMESPACE="+ns)
	c.waitConverged(60*time.Second, 4, 1, 4, 0)
	n := sum(countLogs([]*worker{w}, func(e logEntry) bool {
		return strings.Contains(e.Msg, "counting live workers by heartbeat") && strings.Contains(fmt.Sprint(e.Attrs["err"]), "forbidden")
	}))
	if n != 1 {
		t.Fatalf("want one clear warning that the StatefulSet is forbidden and heartbeats are used; log:\n%s", tail(w.LogPath(), 20))
	}
}

// TestMakeK8sTargets runs the Makefile's Kubernetes targets that need no running pods
// against the real apiserver: deploy, status, scale-workers, helm-lint, helm-template,
// metadata (through the local engines' edge), clean.
func TestMakeK8sTargets(t *testing.T) {
	t.Parallel()
	kc := kubetest.Shared(t)
	c := newCluster(t, 4, defaultLeaseDuration)
	c.startWorker("kds-consumer-0")
	c.waitConverged(60*time.Second, 4, 1, 4, 0)
	ns := "make-" + strings.ToLower(strings.ReplaceAll(enginetest.UniqueName(t, "k"), "_", "-"))
	ns = ns[:min(len(ns), 50)]
	env := append(os.Environ(), "KUBECONFIG="+kc.Kubeconfig(), "MODE=k8s", "NAMESPACE="+ns,
		"PATH="+kc.BinDir()+":"+os.Getenv("PATH"),
		"AWS_ENDPOINT_URL="+enginetest.Endpoint(), "APP_NAME="+c.app, "STREAM_NAME="+c.stream,
		"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION="+enginetest.Region)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "make", append([]string{"-s", "-C", ".."}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("deploy")
	t.Cleanup(func() {
		cmd := exec.Command("make", "-s", "-C", "..", "clean")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("make clean: %v\n%s", err, out)
		}
	})
	if out := run("status"); !strings.Contains(out, "statefulset.apps/kds-consumer") {
		t.Errorf("make status shows no StatefulSet:\n%s", out)
	}
	run("scale-workers", "N=4")
	if out, _, err := kc.Kubectl(t.Context(), "-n", ns, "get", "statefulset", "kds-consumer", "-o", "jsonpath={.spec.replicas}"); err != nil || out != "4" {
		t.Errorf("replicas after make scale-workers N=4: %q, %v", out, err)
	}
	if out := run("helm-lint"); !strings.Contains(out, "0 chart(s) failed") {
		t.Errorf("make helm-lint:\n%s", out)
	}
	if out := run("helm-template"); !strings.Contains(out, "kind: StatefulSet") || !strings.Contains(out, "namespace: "+ns) {
		t.Errorf("make helm-template did not render the StatefulSet into %s", ns)
	}
	if out := run("metadata"); !strings.Contains(out, "kds-consumer-0") || !strings.Contains(out, "max leases per worker") {
		t.Errorf("make metadata MODE=k8s (%d bytes):\n%q", len(out), out)
	}
}
