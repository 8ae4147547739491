package kubeworkers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kds-lease-manager/kds-lease-manager/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// setup stores a StatefulSet (nothing runs it: there is no controller) and a ServiceAccount
// with the chart's kind of Role: get/list/watch on that one StatefulSet.
func setup(t *testing.T, c *kubetest.Cluster, ns string, grant bool) string {
	t.Helper()
	yaml := fmt.Sprintf(`
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kds-consumer, namespace: %[1]s}
spec:
  replicas: 3
  serviceName: kds-consumer
  selector: {matchLabels: {app: kds-consumer}}
  template:
    metadata: {labels: {app: kds-consumer}}
    spec: {containers: [{name: worker, image: kds-consumer-test}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: other, namespace: %[1]s}
spec:
  replicas: 7
  serviceName: other
  selector: {matchLabels: {app: other}}
  template:
    metadata: {labels: {app: other}}
    spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: worker, namespace: %[1]s}
`, ns)
	if grant {
		yaml += fmt.Sprintf(`---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: worker, namespace: %[1]s}
rules:
- apiGroups: [apps]
  resources: [statefulsets]
  resourceNames: [kds-consumer]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: worker, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: worker}
subjects: [{kind: ServiceAccount, name: worker, namespace: %[1]s}]
`, ns)
	}
	if _, _, err := c.KubectlStdin(t.Context(), yaml, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	token, err := c.Token(t.Context(), ns, "worker")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := c.KubeconfigFor(token)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

func start(t *testing.T, kubeconfig, ns string) *Replicas {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(cfg, ns, "kds-consumer", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func waitReplicas(t *testing.T, r *Replicas, want int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		n, err := r.DesiredWorkers(t.Context())
		if err == nil && n == want {
			return time.Since(start)
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("replicas = %d (%v), want %d", n, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With only the chart's narrow Role, the worker's token reads its own StatefulSet's replicas
// and follows `kubectl scale` through the watch.
func TestFollowsReplicasWithNarrowRBAC(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	r := start(t, setup(t, c, ns, true), ns)
	if err := r.WaitSynced(t.Context(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitReplicas(t, r, 3)
	for _, n := range []int{5, 2} {
		start := time.Now()
		if _, _, err := c.Kubectl(t.Context(), "-n", ns, "scale", "statefulset", "kds-consumer", fmt.Sprintf("--replicas=%d", n)); err != nil {
			t.Fatal(err)
		}
		waitReplicas(t, r, n)
		t.Logf("MEASURED kubectl scale --replicas=%d seen by the watch %s after kubectl started", n, time.Since(start))
	}
	// Another StatefulSet changing is none of its business (and it may not read it anyway).
	if _, _, err := c.Kubectl(t.Context(), "-n", ns, "scale", "statefulset", "other", "--replicas=9"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n, _ := r.DesiredWorkers(t.Context()); n != 2 {
		t.Fatalf("replicas = %d after another StatefulSet changed, want 2", n)
	}
}

// Without the Role the worker gets a clear error naming what to grant; the coordinator
// then falls back to live workers.
func TestDeniedGivesActionableError(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	r := start(t, setup(t, c, ns, false), ns)
	err := r.WaitSynced(t.Context(), 10*time.Second)
	if err == nil {
		t.Fatal("reading the StatefulSet without RBAC succeeded")
	}
	for _, want := range []string{"forbidden", "get, list and watch", "kds-consumer", ns} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := r.DesiredWorkers(t.Context()); err == nil {
		t.Fatal("DesiredWorkers returned a count without having read the StatefulSet")
	}
}

func TestStatefulSetName(t *testing.T) {
	for pod, want := range map[string]string{"kds-consumer-0": "kds-consumer", "kds-consumer-12": "kds-consumer", "a-b-c-3": "a-b-c"} {
		if got, err := StatefulSetName(pod); err != nil || got != want {
			t.Errorf("StatefulSetName(%q) = %q, %v; want %q", pod, got, err, want)
		}
	}
	for _, bad := range []string{"laptop", "kds-consumer-", "-3"} {
		if _, err := StatefulSetName(bad); err == nil || !strings.Contains(err.Error(), "STATEFULSET_NAME") {
			t.Errorf("StatefulSetName(%q) error = %v, want one naming STATEFULSET_NAME", bad, err)
		}
	}
}
