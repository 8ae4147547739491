// Package charttest tests the kds-lease-manager Helm chart (../kds-lease-manager) with the
// pinned helm and kubectl against a real kube-apiserver (internal/kubetest), and the
// worker image's Dockerfile with static checks (there is no container runtime here).
package charttest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// Names the chart renders with its default values: all derive from the release name, as
// in `make deploy` (release kds-consumer: workers kds-consumer-0..N-1).
const (
	releaseName = "kds-consumer"
	stsName     = releaseName // StatefulSet, headless Service, ServiceAccount, Role, RoleBinding
	cmName      = releaseName + "-config"
	secretName  = releaseName + "-localstack-credentials"
	lsName      = releaseName + "-localstack" // LocalStack's Deployment and Service
	appName     = releaseName + "-app"        // APP_NAME: the tables appName and appName_meta
)

// chartDir is the chart's absolute path.
func chartDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "kds-lease-manager"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "Chart.yaml")); err != nil {
		t.Fatalf("chart not found: %v", err)
	}
	return d
}

// repoRoot is the module root (two levels up).
func repoRoot(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "go.mod")); err != nil {
		t.Fatalf("repository root not found: %v", err)
	}
	return d
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustHelm(t testing.TB, c *kubetest.Cluster, args ...string) string {
	t.Helper()
	out, _, err := c.Helm(testCtx(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustKubectl(t testing.TB, c *kubetest.Cluster, args ...string) string {
	t.Helper()
	out, _, err := c.Kubectl(testCtx(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// getJSON runs `kubectl get ARGS -o json` as admin and decodes the result into v.
func getJSON(t testing.TB, c *kubetest.Cluster, v any, args ...string) {
	t.Helper()
	out := mustKubectl(t, c, append(append([]string{"get"}, args...), "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("kubectl get %s: decode: %v", strings.Join(args, " "), err)
	}
}

// object is the part of any object the tests look at generically.
type object struct {
	Kind     string          `json:"kind"`
	Metadata meta            `json:"metadata"`
	Raw      json.RawMessage `json:"-"`
}

type meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// objectList decodes a List (kubectl get/apply -o json) into its objects.
func objectList(t testing.TB, data string) []object {
	t.Helper()
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(data), &list); err != nil {
		t.Fatalf("decode list: %v\n%s", err, data)
	}
	if list.Kind != "List" && !strings.HasSuffix(list.Kind, "List") {
		// A single object.
		list.Items = []json.RawMessage{json.RawMessage(data)}
	}
	objs := make([]object, 0, len(list.Items))
	for _, raw := range list.Items {
		var o object
		if err := json.Unmarshal(raw, &o); err != nil {
			t.Fatalf("decode object: %v", err)
		}
		o.Raw = raw
		objs = append(objs, o)
	}
	return objs
}

// find returns the object of that kind and name, failing the test if it is missing.
func find(t testing.TB, objs []object, kind, name string) object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	var have []string
	for _, o := range objs {
		have = append(have, o.Kind+"/"+o.Metadata.Name)
	}
	t.Fatalf("no %s/%s among %v", kind, name, have)
	return object{}
}

func decode(t testing.TB, o object, v any) {
	t.Helper()
	if err := json.Unmarshal(o.Raw, v); err != nil {
		t.Fatalf("decode %s/%s: %v", o.Kind, o.Metadata.Name, err)
	}
}

// standardLabels are on every object of the chart.
var standardLabels = []string{
	"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
	"app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by",
	"helm.sh/chart",
}

func checkLabels(t testing.TB, o object, release string) {
	t.Helper()
	for _, k := range standardLabels {
		if o.Metadata.Labels[k] == "" {
			t.Errorf("%s/%s: label %s missing (labels %v)", o.Kind, o.Metadata.Name, k, o.Metadata.Labels)
		}
	}
	if got := o.Metadata.Labels["app.kubernetes.io/instance"]; got != release {
		t.Errorf("%s/%s: app.kubernetes.io/instance = %q, want %q", o.Kind, o.Metadata.Name, got, release)
	}
	if got := o.Metadata.Labels["app.kubernetes.io/managed-by"]; got != "Helm" {
		t.Errorf("%s/%s: app.kubernetes.io/managed-by = %q, want Helm", o.Kind, o.Metadata.Name, got)
	}
	if got := o.Metadata.Labels["app.kubernetes.io/name"]; got != "kds-lease-manager" {
		t.Errorf("%s/%s: app.kubernetes.io/name = %q", o.Kind, o.Metadata.Name, got)
	}
}
