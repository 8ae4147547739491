// Package kubeworkers gives the coordinator the desired worker count of a Kubernetes
// deployment: spec.replicas of the workers' own StatefulSet, kept current by a watch
// (an informer limited to that one object), not by polling.
//
// The workers' ServiceAccount needs only get, list and watch on that StatefulSet
// (resourceNames restricted; the list and watch use a metadata.name field selector, which
// such a Role allows). While the count cannot be read (RBAC denial, API server away), the
// coordinator falls back to counting live workers by heartbeat and logs why.
package kubeworkers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrNotSynced means the StatefulSet has not been read yet.
var ErrNotSynced = errors.New("statefulset not read yet")

// Replicas is a consumer.WorkerCounter reading spec.replicas of one StatefulSet.
type Replicas struct {
	namespace, name string
	client          kubernetes.Interface
	log             *slog.Logger

	mu       sync.Mutex
	replicas int
	synced   bool
	lastErr  error
}

// New returns a Replicas for the StatefulSet namespace/name. Call Run to start watching.
func New(cfg *rest.Config, namespace, name string, log *slog.Logger) (*Replicas, error) {
	if namespace == "" || name == "" {
		return nil, fmt.Errorf("kubeworkers: namespace (%q) and StatefulSet name (%q) are required", namespace, name)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeworkers: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Replicas{namespace: namespace, name: name, client: client, log: log}, nil
}

// Run watches the StatefulSet until ctx is done.
func (r *Replicas) Run(ctx context.Context) {
	lw := cache.NewListWatchFromClient(r.client.AppsV1().RESTClient(), "statefulsets", r.namespace,
		fields.OneTermEqualSelector("metadata.name", r.name))
	inf := cache.NewSharedInformer(lw, &appsv1.StatefulSet{}, 0)
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		r.setErr(err)
	})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.update(obj) },
		UpdateFunc: func(_, obj any) { r.update(obj) },
		DeleteFunc: func(any) {
			r.mu.Lock()
			r.synced, r.lastErr = false, fmt.Errorf("statefulset %s/%s was deleted", r.namespace, r.name)
			r.mu.Unlock()
		},
	})
	inf.RunWithContext(ctx)
}

func (r *Replicas) update(obj any) {
	ss, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return
	}
	n := 1
	if ss.Spec.Replicas != nil {
		n = int(*ss.Spec.Replicas)
	}
	r.mu.Lock()
	changed := !r.synced || n != r.replicas
	r.replicas, r.synced, r.lastErr = n, true, nil
	r.mu.Unlock()
	if changed {
		r.log.Info("statefulset replicas", "statefulset", r.namespace+"/"+r.name, "replicas", n)
	}
}

func (r *Replicas) setErr(err error) {
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		err = fmt.Errorf("%w: the worker's ServiceAccount needs get, list and watch on statefulset %s in namespace %s (see the chart's Role)",
			err, r.name, r.namespace)
	}
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
}

// DesiredWorkers implements consumer.WorkerCounter: the last spec.replicas seen. Before
// the first successful read it returns an error saying why it has none.
func (r *Replicas) DesiredWorkers(context.Context) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced {
		if r.lastErr != nil {
			return 0, fmt.Errorf("read statefulset %s/%s: %w", r.namespace, r.name, r.lastErr)
		}
		return 0, fmt.Errorf("statefulset %s/%s: %w", r.namespace, r.name, ErrNotSynced)
	}
	return r.replicas, nil
}

// WaitSynced waits until the StatefulSet was read once, an error was seen, or the timeout
// passed, so that a worker can report a denial at start.
func (r *Replicas) WaitSynced(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		r.mu.Lock()
		synced, err := r.synced, r.lastErr
		r.mu.Unlock()
		switch {
		case synced:
			return nil
		case err != nil:
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("statefulset %s/%s: %w", r.namespace, r.name, ErrNotSynced)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Config returns the in-cluster configuration inside a pod, else the one KUBECONFIG (or
// ~/.kube/config) names.
func Config() (*rest.Config, error) {
	if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeworkers: no in-cluster configuration and no usable KUBECONFIG: %w", err)
	}
	return cfg, nil
}

// serviceAccountNamespace is where Kubernetes mounts the pod's namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Namespace returns the pod's namespace: the given value, else the mounted ServiceAccount
// namespace.
func Namespace(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	b, err := os.ReadFile(serviceAccountNamespace)
	if err != nil {
		return "", errors.New("kubeworkers: namespace unknown: set POD_NAMESPACE (the chart sets it from the downward API)")
	}
	return strings.TrimSpace(string(b)), nil
}

var ordinal = regexp.MustCompile(`^(.+)-[0-9]+$`)

// StatefulSetName derives the StatefulSet's name from a pod name (kds-consumer-2 ->
// kds-consumer).
func StatefulSetName(podName string) (string, error) {
	m := ordinal.FindStringSubmatch(podName)
	if m == nil {
		return "", fmt.Errorf("kubeworkers: worker id %q is not a StatefulSet pod name (<name>-<ordinal>): set STATEFULSET_NAME", podName)
	}
	return m[1], nil
}
