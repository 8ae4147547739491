package kubetest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func pinned(t *testing.T) map[string]string {
	t.Helper()
	v, err := kubetest.PinnedVersions(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func statefulSet(name string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: %[1]s
spec:
  replicas: %[2]d
  serviceName: %[1]s
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: main
        image: registry.invalid/kds-lease-manager:test
`, name, replicas)
}

func mustKubectl(t *testing.T, c *kubetest.Cluster, args ...string) string {
	t.Helper()
	out, _, err := c.Kubectl(ctx(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func apply(t *testing.T, c *kubetest.Cluster, ns, manifest string) {
	t.Helper()
	if _, _, err := c.KubectlStdin(ctx(t), manifest, "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

func TestClusterStarts(t *testing.T) {
	c := kubetest.Shared(t)
	if !strings.HasPrefix(c.Server(), "https://") {
		t.Errorf("Server() = %q, want an https URL", c.Server())
	}
	if _, err := os.Stat(c.Kubeconfig()); err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	if got := strings.TrimSpace(mustKubectl(t, c, "get", "--raw", "/readyz")); got != "ok" {
		t.Errorf("/readyz = %q", got)
	}
	// The admin kubeconfig's user bypasses RBAC.
	if got := strings.TrimSpace(mustKubectl(t, c, "auth", "can-i", "*", "*", "--all-namespaces")); got != "yes" {
		t.Errorf("admin can-i * * = %q", got)
	}
	for name, rss := range c.RSS() {
		t.Logf("%s RSS %d MiB", name, rss>>20)
	}
}

func TestVersions(t *testing.T) {
	c := kubetest.Shared(t)
	want := pinned(t)
	out := mustKubectl(t, c, "version", "-o", "json")
	var v struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("kubectl version: %v\n%s", err, out)
	}
	if v.ServerVersion.GitVersion != want["kube-apiserver"] {
		t.Errorf("server version %q, want %q", v.ServerVersion.GitVersion, want["kube-apiserver"])
	}
	if v.ClientVersion.GitVersion != want["kubectl"] {
		t.Errorf("kubectl version %q, want %q", v.ClientVersion.GitVersion, want["kubectl"])
	}
	if want["kube-apiserver"] != "v1.37.2" {
		t.Logf("note: build.sh pins kube-apiserver %s", want["kube-apiserver"])
	}
}

// A ServiceAccount token with a Role limited by resourceNames can read exactly that
// StatefulSet: nothing else in its namespace, and nothing in another.
func TestServiceAccountRBAC(t *testing.T) {
	c := kubetest.Shared(t)
	ns, other := c.Namespace(t), c.Namespace(t)
	apply(t, c, ns, statefulSet("lease-manager", 2))
	apply(t, c, ns, statefulSet("unrelated", 1))
	apply(t, c, other, statefulSet("lease-manager", 2))
	apply(t, c, ns, `apiVersion: v1
kind: ServiceAccount
metadata:
  name: scaler
---
apiVersion: v1
kind: Secret
metadata:
  name: hidden
stringData: {k: v}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: read-lease-manager
rules:
- apiGroups: [apps]
  resources: [statefulsets]
  resourceNames: [lease-manager]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: read-lease-manager
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: read-lease-manager
subjects:
- kind: ServiceAccount
  name: scaler
`)

	tok, err := c.Token(ctx(t), ns, "scaler", "--duration=10m")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := c.KubeconfigFor(tok)
	if err != nil {
		t.Fatal(err)
	}

	who, _, err := c.KubectlAs(ctx(t), kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil {
		t.Fatal(err)
	}
	if want := "system:serviceaccount:" + ns + ":scaler"; who != want {
		t.Errorf("whoami = %q, want %q", who, want)
	}

	out, _, err := c.KubectlAs(ctx(t), kc, "get", "statefulset", "lease-manager", "-n", ns, "-o", "jsonpath={.spec.replicas}")
	if err != nil {
		t.Fatalf("the SA cannot read its StatefulSet: %v", err)
	}
	if out != "2" {
		t.Errorf("replicas = %q, want 2", out)
	}

	for _, args := range [][]string{
		{"get", "secrets", "-n", ns},
		{"get", "secret", "hidden", "-n", ns},
		{"get", "statefulset", "unrelated", "-n", ns},
		{"get", "statefulset", "lease-manager", "-n", other},
		{"scale", "statefulset", "lease-manager", "-n", ns, "--replicas=3"},
	} {
		_, stderr, err := c.KubectlAs(ctx(t), kc, args...)
		if err == nil {
			t.Errorf("kubectl %s: allowed, want Forbidden", strings.Join(args, " "))
		} else if !strings.Contains(stderr, "Forbidden") && !strings.Contains(stderr, "forbidden") {
			t.Errorf("kubectl %s: %v, want Forbidden", strings.Join(args, " "), err)
		}
	}

	// A token for another audience is rejected outright.
	bad, err := c.Token(ctx(t), ns, "scaler", "--audience=someone-else")
	if err != nil {
		t.Fatal(err)
	}
	badKC, err := c.KubeconfigFor(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := c.KubectlAs(ctx(t), badKC, "get", "statefulset", "lease-manager", "-n", ns); err == nil ||
		!strings.Contains(stderr, "Unauthorized") {
		t.Errorf("wrong-audience token: err=%v stderr=%q, want Unauthorized", err, stderr)
	}
}

func TestScaleStatefulSet(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	apply(t, c, ns, statefulSet("lease-manager", 1))
	mustKubectl(t, c, "scale", "statefulset", "lease-manager", "-n", ns, "--replicas=5")
	if got := mustKubectl(t, c, "get", "statefulset", "lease-manager", "-n", ns, "-o", "jsonpath={.spec.replicas}"); got != "5" {
		t.Errorf("spec.replicas = %q after scale, want 5", got)
	}
	// No controller runs: the StatefulSet is stored but never gets pods or status.
	if got := mustKubectl(t, c, "get", "pods", "-n", ns, "-o", "name"); got != "" {
		t.Errorf("pods appeared without a controller-manager: %q", got)
	}
}

// Pods can be stored although no namespace has a "default" ServiceAccount.
func TestPodWithoutServiceAccount(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	apply(t, c, ns, `apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
  - name: main
    image: registry.invalid/x:1
`)
	if got := mustKubectl(t, c, "get", "pod", "p", "-n", ns, "-o", "jsonpath={.status.phase}"); got != "" && got != "Pending" {
		t.Errorf("phase %q", got)
	}
}

func writeChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tiny")
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: tiny\nversion: 0.1.0\nappVersion: \"1.0\"\n",
		"values.yaml": "replicas: 3\ngreeting: hello\n",
		"templates/configmap.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
  replicas: {{ .Values.replicas | quote }}
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
`,
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestHelm(t *testing.T) {
	c := kubetest.Shared(t)
	want := pinned(t)
	out, _, err := c.Helm(ctx(t), "version", "--short")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, want["helm"]) {
		t.Errorf("helm version = %q, want %s", out, want["helm"])
	}

	chart := writeChart(t)
	out, _, err = c.Helm(ctx(t), "template", "demo", chart, "--set", "greeting=bonjour")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"name: demo-config", `greeting: "bonjour"`, `replicas: "3"`} {
		if !strings.Contains(out, s) {
			t.Errorf("helm template output lacks %q:\n%s", s, out)
		}
	}

	// install talks to the real apiserver (no --wait: nothing would become ready).
	ns := c.Namespace(t)
	if _, _, err := c.Helm(ctx(t), "install", "demo", chart, "-n", ns); err != nil {
		t.Fatal(err)
	}
	if got := mustKubectl(t, c, "get", "configmap", "demo-config", "-n", ns, "-o", "jsonpath={.data.kube}"); got != want["kube-apiserver"] {
		t.Errorf("installed chart saw Kubernetes %q, want %q", got, want["kube-apiserver"])
	}
	out, _, err = c.Helm(ctx(t), "list", "-n", ns, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"status":"deployed"`) {
		t.Errorf("helm list: %s", out)
	}
}

func TestAttach(t *testing.T) {
	c := kubetest.Shared(t)
	a, err := kubetest.Attach(ctx(t), c.Kubeconfig(), kubetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Server() != c.Server() {
		t.Errorf("attached server %q, want %q", a.Server(), c.Server())
	}
	if string(a.CACert()) != string(c.CACert()) {
		t.Errorf("attached CA differs")
	}
	if out, _, err := a.Kubectl(ctx(t), "get", "namespace", "default", "-o", "name"); err != nil || out != "namespace/default\n" {
		t.Errorf("attached kubectl: %q, %v", out, err)
	}
	tok, err := a.Token(ctx(t), "default", "probe-missing-sa")
	if err == nil {
		t.Errorf("token for a missing ServiceAccount: %q, want an error", tok)
	}
}

func TestNoBuildFailsClearly(t *testing.T) {
	t.Setenv(kubetest.CacheDirEnv, t.TempDir())
	t.Setenv(kubetest.NoBuildEnv, "1")
	_, err := kubetest.EnsureBinaries(ctx(t), nil)
	if err == nil || !strings.Contains(err.Error(), kubetest.NoBuildEnv) || !strings.Contains(err.Error(), "build.sh") {
		t.Fatalf("EnsureBinaries with an empty cache and %s=1: %v", kubetest.NoBuildEnv, err)
	}
	t.Log(err)
}

// A private cluster starts next to the shared one, and Close stops it and cleans up.
func TestStartAndClose(t *testing.T) {
	shared := kubetest.Shared(t)
	t0 := time.Now()
	c, err := kubetest.Start(ctx(t), kubetest.Options{BinDir: shared.BinDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second cluster ready in %s; RSS %v", time.Since(t0).Round(time.Millisecond), c.RSS())
	if c.Server() == shared.Server() {
		t.Fatalf("both clusters on %s", c.Server())
	}
	mustKubectl(t, c, "create", "namespace", "only-here")
	if _, _, err := shared.Kubectl(ctx(t), "get", "namespace", "only-here"); err == nil {
		t.Errorf("namespace leaked into the shared cluster")
	}
	dir := c.Dir()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	default:
		t.Errorf("Done not closed after Close")
	}
	if c.Err() != nil {
		t.Errorf("Err after Close: %v", c.Err())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("run dir %s left behind: %v", dir, err)
	}
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.Server(), "https://"), 2*time.Second); err == nil {
		conn.Close()
		t.Errorf("apiserver still listens on %s after Close", c.Server())
	}
}

// A server that cannot start makes Start fail fast with its log tail.
func TestStartFailsClearly(t *testing.T) {
	shared := kubetest.Shared(t)
	bin := t.TempDir()
	for _, n := range []string{"kube-apiserver", "kubectl", "helm"} {
		if err := os.Symlink(filepath.Join(shared.BinDir(), n), filepath.Join(bin, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "etcd"), []byte("#!/bin/sh\necho etcd-boom >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := kubetest.Start(ctx(t), kubetest.Options{BinDir: bin})
	if err == nil || !strings.Contains(err.Error(), "etcd exited") || !strings.Contains(err.Error(), "etcd-boom") {
		t.Errorf("Start with a failing etcd: %v", err)
	}

	_, err = kubetest.Start(ctx(t), kubetest.Options{BinDir: shared.BinDir(), APIServerArgs: []string{"--no-such-flag"}})
	if err == nil || !strings.Contains(err.Error(), "kube-apiserver exited") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("Start with a bad apiserver flag: %v", err)
	}
}
