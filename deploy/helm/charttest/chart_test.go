package charttest

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/kds-lease-manager/kds-lease-manager/internal/kubetest"
)

// realAWS are the values of real-AWS mode: no LocalStack, a region, IRSA.
func realAWS(ns string) []string {
	return []string{
		"--set", "namespace=" + ns,
		"--set", "createNamespace=false",
		"--set", "localstack.enabled=false",
		"--set", "aws.region=eu-west-1",
		"--set-string", `serviceAccount.annotations.eks\.amazonaws\.com/role-arn=arn:aws:iam::123456789012:role/kds-consumer`,
	}
}

func TestLint(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	for name, args := range map[string][]string{
		"default":  nil,
		"real-aws": realAWS("kds-prod"),
		"heartbeat": {"--set", "consumer.workerCountSource=heartbeat",
			"--set", "consumer.app.enableDynamicMaxLeases=false", "--set", "consumer.app.staticMaxLeases=20"},
		"monitoring": monitoringOn,
		// As a subchart: the parent's global values reach the schema.
		"subchart-global": {"--set", "global.imageRegistry=registry.example.com"},
		"production":      {"-f", filepath.Join(chartDir(t), "values-production.yaml")},
		"local":           {"-f", filepath.Join(chartDir(t), "values-local.yaml")},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out := mustHelm(t, c, append([]string{"lint", "--strict", chartDir(t)}, args...)...)
			if strings.Contains(out, "[ERROR]") || strings.Contains(out, "[WARNING]") {
				t.Errorf("helm lint:\n%s", out)
			}
		})
	}
}

// dryRun renders the chart and has the apiserver validate, default and admit every object
// (kubectl apply --dry-run=server), returning what the server would store.
func dryRun(t *testing.T, c *kubetest.Cluster, ns string, args ...string) []object {
	t.Helper()
	manifest := mustHelm(t, c, append([]string{"template", releaseName, chartDir(t), "--namespace", ns}, args...)...)
	out, _, err := c.KubectlStdin(testCtx(t), manifest, "apply", "--dry-run=server", "-o", "json", "-f", "-")
	if err != nil {
		t.Fatalf("%v\nmanifest:\n%s", err, manifest)
	}
	objs := objectList(t, out)
	for _, o := range objs {
		checkLabels(t, o, releaseName)
		if o.Kind != "Namespace" && o.Metadata.Namespace != ns {
			t.Errorf("%s/%s in namespace %q, want %q", o.Kind, o.Metadata.Name, o.Metadata.Namespace, ns)
		}
	}
	return objs
}

func kinds(objs []object) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Kind+"/"+o.Metadata.Name)
	}
	slices.Sort(ks)
	return ks
}

func TestTemplateServerDryRun(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)

	t.Run("default", func(t *testing.T) {
		t.Parallel()
		ns := c.Namespace(t)
		// No namespace value: every object lands in the release's namespace (dryRun checks).
		objs := dryRun(t, c, ns)
		want := []string{
			"ConfigMap/" + cmName, "Deployment/" + lsName, "Job/" + stsName + "-init-stream-1",
			"PodDisruptionBudget/" + stsName, "Role/" + stsName, "RoleBinding/" + stsName, "Secret/" + secretName,
			"Service/" + lsName, "Service/" + stsName, "ServiceAccount/" + stsName, "StatefulSet/" + stsName,
		}
		slices.Sort(want)
		if got := kinds(objs); !slices.Equal(got, want) {
			t.Errorf("objects:\n got %v\nwant %v", got, want)
		}
		var cm corev1.ConfigMap
		decode(t, find(t, objs, "ConfigMap", cmName), &cm)
		wantEnv := map[string]string{
			"AWS_ENDPOINT_URL": "http://" + lsName + "." + ns + ".svc:4566", "AWS_REGION": "us-east-1",
			"STREAM_NAME": "test-stream", "APP_NAME": appName, "ENABLE_DYNAMIC_MAX_LEASES": "true",
			"MAX_LEASES_CAP": "80", "WORKER_COUNT_SOURCE": "kubernetes", "STATEFULSET_NAME": stsName,
			"LEASE_DURATION": "10s", "SHUTDOWN_TIMEOUT": "20s", "LOG_FORMAT": "json", "HEALTH_ADDR": ":8080",
			"ON_PROCESSOR_FAILURE": "retry", "PROCESSOR_RETRIES": "10",
		}
		for k, v := range wantEnv {
			if cm.Data[k] != v {
				t.Errorf("ConfigMap %s = %q, want %q", k, cm.Data[k], v)
			}
		}
		for k := range cm.Data {
			if strings.Contains(k, "SECRET") || strings.Contains(k, "ACCESS_KEY") {
				t.Errorf("ConfigMap carries credentials: %s", k)
			}
		}
		var sec corev1.Secret
		decode(t, find(t, objs, "Secret", secretName), &sec)
		if string(sec.Data["AWS_ACCESS_KEY_ID"]) != "test" || string(sec.Data["AWS_SECRET_ACCESS_KEY"]) != "test" {
			t.Errorf("LocalStack credentials Secret: %v", sec.Data)
		}
		var sts appsv1.StatefulSet
		decode(t, find(t, objs, "StatefulSet", stsName), &sts)
		checkStatefulSet(t, &sts, 3)
		if !hasEnvFrom(sts.Spec.Template.Spec.Containers[0], secretName) {
			t.Errorf("worker does not take its credentials from Secret %s", secretName)
		}
		var job batchv1.Job
		decode(t, find(t, objs, "Job", stsName+"-init-stream-1"), &job)
		checkJob(t, &job, true)
		var ls appsv1.Deployment
		decode(t, find(t, objs, "Deployment", lsName), &ls)
		checkLocalStack(t, &ls)
		var pdb policyv1.PodDisruptionBudget
		decode(t, find(t, objs, "PodDisruptionBudget", stsName), &pdb)
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" || pdb.Spec.MinAvailable != nil {
			t.Errorf("PodDisruptionBudget: %+v", pdb.Spec)
		}
		for k, v := range pdb.Spec.Selector.MatchLabels {
			if sts.Spec.Template.Labels[k] != v {
				t.Errorf("PodDisruptionBudget selector %s=%s does not select the worker pods", k, v)
			}
		}
	})

	t.Run("real-aws", func(t *testing.T) {
		t.Parallel()
		ns := c.Namespace(t)
		objs := dryRun(t, c, ns, realAWS(ns)...)
		want := []string{
			"ConfigMap/" + cmName, "Job/" + stsName + "-init-stream-1", "PodDisruptionBudget/" + stsName, "Role/" + stsName,
			"RoleBinding/" + stsName, "Service/" + stsName, "ServiceAccount/" + stsName, "StatefulSet/" + stsName,
		}
		slices.Sort(want)
		if got := kinds(objs); !slices.Equal(got, want) {
			t.Errorf("objects:\n got %v\nwant %v", got, want)
		}
		for _, o := range objs {
			raw := string(o.Raw)
			for _, bad := range []string{"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "localstack", "secretRef"} {
				if strings.Contains(raw, bad) {
					t.Errorf("real-AWS mode: %s/%s contains %q", o.Kind, o.Metadata.Name, bad)
				}
			}
		}
		var cm corev1.ConfigMap
		decode(t, find(t, objs, "ConfigMap", cmName), &cm)
		if cm.Data["AWS_REGION"] != "eu-west-1" {
			t.Errorf("AWS_REGION = %q", cm.Data["AWS_REGION"])
		}
		sa := find(t, objs, "ServiceAccount", stsName)
		if got := sa.Metadata.Annotations["eks.amazonaws.com/role-arn"]; got != "arn:aws:iam::123456789012:role/kds-consumer" {
			t.Errorf("IRSA annotation = %q", got)
		}
		var sts appsv1.StatefulSet
		decode(t, find(t, objs, "StatefulSet", stsName), &sts)
		checkStatefulSet(t, &sts, 3)
		var job batchv1.Job
		decode(t, find(t, objs, "Job", stsName+"-init-stream-1"), &job)
		checkJob(t, &job, false)
		if job.Spec.Template.Spec.ServiceAccountName != stsName {
			t.Errorf("init job runs as %q, want the IRSA ServiceAccount %s", job.Spec.Template.Spec.ServiceAccountName, stsName)
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		t.Parallel()
		ns := c.Namespace(t)
		objs := dryRun(t, c, ns, "--set", "namespace="+ns, "--set", "createNamespace=false",
			"--set", "consumer.dashboard.enabled=true", "--set", "consumer.dashboard.port=9000")
		var cm corev1.ConfigMap
		decode(t, find(t, objs, "ConfigMap", cmName), &cm)
		if cm.Data["DASHBOARD_ADDR"] != ":9000" {
			t.Errorf("DASHBOARD_ADDR %q, want :9000", cm.Data["DASHBOARD_ADDR"])
		}
		var sts appsv1.StatefulSet
		decode(t, find(t, objs, "StatefulSet", stsName), &sts)
		if !slices.ContainsFunc(sts.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool {
			return p.Name == "dashboard" && p.ContainerPort == 9000
		}) {
			t.Errorf("no container port dashboard 9000: %+v", sts.Spec.Template.Spec.Containers[0].Ports)
		}
	})

	t.Run("multilang", func(t *testing.T) {
		t.Parallel()
		ns := c.Namespace(t)
		props := "executableName = node /app/sample_kcl_app.js\nprocessingLanguage = nodejs"
		objs := dryRun(t, c, ns, "--set", "namespace="+ns, "--set", "createNamespace=false",
			"--set", "consumer.image.repository=registry.example.com/orders-kcl", "--set", "consumer.image.tag=1.2.0",
			"--set", "consumer.multilang.command=node /app/sample_kcl_app.js", "--set", "consumer.multilang.timeout=90s",
			"--set-string", "consumer.multilang.properties="+props,
			"--set", "consumer.command[0]=/usr/local/bin/kds-consumer", "--set", "consumer.args[0]=--log-level=debug",
			"--set", "consumer.extraEnv[0].name=NODE_OPTIONS", "--set", "consumer.extraEnv[0].value=--max-old-space-size=200",
			"--set", "consumer.extraEnv[1].name=API_KEY", "--set", "consumer.extraEnv[1].valueFrom.secretKeyRef.name=api",
			"--set", "consumer.extraEnv[1].valueFrom.secretKeyRef.key=key")
		var cm corev1.ConfigMap
		decode(t, find(t, objs, "ConfigMap", cmName), &cm)
		if _, on := cm.Data["DASHBOARD_ADDR"]; on {
			t.Errorf("DASHBOARD_ADDR %q without consumer.dashboard.enabled", cm.Data["DASHBOARD_ADDR"])
		}
		for k, v := range map[string]string{"MULTILANG_COMMAND": "node /app/sample_kcl_app.js", "MULTILANG_TIMEOUT": "90s",
			"KCL_PROPERTIES": "/etc/kds-consumer/app.properties"} {
			if cm.Data[k] != v {
				t.Errorf("ConfigMap %s = %q, want %q", k, cm.Data[k], v)
			}
		}
		var pcm corev1.ConfigMap
		decode(t, find(t, objs, "ConfigMap", stsName+"-properties"), &pcm)
		if got := strings.TrimSpace(pcm.Data["app.properties"]); got != props {
			t.Errorf("properties ConfigMap app.properties = %q, want %q", got, props)
		}
		var sts appsv1.StatefulSet
		decode(t, find(t, objs, "StatefulSet", stsName), &sts)
		ctr := sts.Spec.Template.Spec.Containers[0]
		checkHardened(t, "worker", &sts.Spec.Template.Spec, &ctr)
		if ctr.Image != "registry.example.com/orders-kcl:1.2.0" || !slices.Equal(ctr.Command, []string{"/usr/local/bin/kds-consumer"}) ||
			!slices.Equal(ctr.Args, []string{"--log-level=debug"}) {
			t.Errorf("worker container image %q command %q args %q", ctr.Image, ctr.Command, ctr.Args)
		}
		env := map[string]string{}
		for _, e := range ctr.Env {
			env[e.Name] = e.Value
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				env[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
			}
		}
		if env["NODE_OPTIONS"] != "--max-old-space-size=200" || env["API_KEY"] != "secret:api/key" {
			t.Errorf("consumer.extraEnv not in the worker's env: %v", env)
		}
		mounted := false
		for _, m := range ctr.VolumeMounts {
			mounted = mounted || m.Name == "kcl-properties" && m.MountPath == "/etc/kds-consumer" && m.ReadOnly
		}
		if !mounted {
			t.Errorf("the properties file is not mounted read-only at /etc/kds-consumer: %+v", ctr.VolumeMounts)
		}
	})

	// The documented values files and the IAM policy the chart renders for real AWS.
	prod := filepath.Join(chartDir(t), "values-production.yaml")
	const kmsKey = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	for _, tc := range []struct {
		label   string
		name    string
		args    []string
		objects []string // besides the ConfigMap, Role, RoleBinding, Service, ServiceAccount, StatefulSet named name
		image   string
		// policy: Sid -> the resources it must name; absent Sids must not be there.
		policy map[string][]string
	}{
		{
			label: "local", name: stsName, args: []string{"-f", filepath.Join(chartDir(t), "values-local.yaml")},
			objects: []string{"Deployment/" + lsName, "Job/" + stsName + "-init-stream-1", "Secret/" + secretName, "Service/" + lsName},
			image:   "kds-consumer-test:latest",
		},
		{
			label: "production", name: releaseName, args: []string{"-f", prod}, objects: []string{"ConfigMap/" + releaseName + "-iam-policy"},
			image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/kds-consumer:" + strings.TrimPrefix(defaultImage(t), "kds-consumer-test:"),
			policy: map[string][]string{
				"ReadTheStream": {"arn:aws:kinesis:eu-west-1:123456789012:stream/orders"},
				"LeaseAndMetadataTables": {"arn:aws:dynamodb:eu-west-1:123456789012:table/orders-consumer",
					"arn:aws:dynamodb:eu-west-1:123456789012:table/orders-consumer_meta"},
			},
		},
		{
			label: "production-kms-dead-letter", name: releaseName, args: []string{"-f", prod, "--set", "aws.kmsKeyArn=" + kmsKey, "--set", "consumer.createTables=true",
				"--set", "consumer.stream.name=payments", "--set", "consumer.app.name=payments-app", "--set", "consumer.leaseTable=kcl-payments",
				"--set", "consumer.onProcessorFailure.policy=dead-letter", "--set", "consumer.onProcessorFailure.deadLetterStream=payments-dlq"},
			objects: []string{"ConfigMap/" + releaseName + "-iam-policy"},
			image:   "123456789012.dkr.ecr.eu-west-1.amazonaws.com/kds-consumer:" + strings.TrimPrefix(defaultImage(t), "kds-consumer-test:"),
			policy: map[string][]string{
				"ReadTheStream": {"arn:aws:kinesis:eu-west-1:123456789012:stream/payments"},
				"LeaseAndMetadataTables": {"arn:aws:dynamodb:eu-west-1:123456789012:table/kcl-payments",
					"arn:aws:dynamodb:eu-west-1:123456789012:table/payments-app_meta"},
				"CreateTables": {"arn:aws:dynamodb:eu-west-1:123456789012:table/kcl-payments",
					"arn:aws:dynamodb:eu-west-1:123456789012:table/payments-app_meta"},
				"DeadLetterStream": {"arn:aws:kinesis:eu-west-1:123456789012:stream/payments-dlq"},
				"DecryptTheStream": {kmsKey},
			},
		},
	} {
		t.Run("values/"+tc.label, func(t *testing.T) {
			t.Parallel()
			ns := c.Namespace(t)
			objs := dryRun(t, c, ns, tc.args...)
			n := tc.name
			want := append([]string{"ConfigMap/" + n + "-config", "PodDisruptionBudget/" + n, "Role/" + n, "RoleBinding/" + n,
				"Service/" + n, "ServiceAccount/" + n, "StatefulSet/" + n}, tc.objects...)
			slices.Sort(want)
			if got := kinds(objs); !slices.Equal(got, want) {
				t.Errorf("objects:\n got %v\nwant %v", got, want)
			}
			var sts appsv1.StatefulSet
			decode(t, find(t, objs, "StatefulSet", n), &sts)
			if img := sts.Spec.Template.Spec.Containers[0].Image; img != tc.image {
				t.Errorf("image %q, want %q", img, tc.image)
			}
			if tc.policy == nil {
				return
			}
			var cm corev1.ConfigMap
			decode(t, find(t, objs, "ConfigMap", n+"-iam-policy"), &cm)
			var doc struct {
				Statement []struct {
					Sid      string
					Action   []string
					Resource any
				}
			}
			if err := json.Unmarshal([]byte(cm.Data["policy.json"]), &doc); err != nil {
				t.Fatalf("policy.json: %v\n%s", err, cm.Data["policy.json"])
			}
			got := map[string][]string{}
			for _, st := range doc.Statement {
				switch r := st.Resource.(type) {
				case string:
					got[st.Sid] = []string{r}
				case []any:
					for _, x := range r {
						got[st.Sid] = append(got[st.Sid], fmt.Sprint(x))
					}
				}
				if st.Sid == "DecryptTheStream" && !slices.Equal(st.Action, []string{"kms:Decrypt"}) {
					t.Errorf("DecryptTheStream actions %v, want kms:Decrypt", st.Action)
				}
			}
			if !reflect.DeepEqual(got, tc.policy) {
				t.Errorf("policy statements (Sid: resources):\n got %v\nwant %v", got, tc.policy)
			}
		})
	}

	t.Run("heartbeat", func(t *testing.T) {
		t.Parallel()
		ns := c.Namespace(t)
		objs := dryRun(t, c, ns, "--set", "namespace="+ns, "--set", "createNamespace=false",
			"--set", "consumer.workerCountSource=heartbeat")
		for _, o := range objs {
			if o.Kind == "Role" || o.Kind == "RoleBinding" {
				t.Errorf("heartbeat mode renders %s/%s: the worker needs no API access", o.Kind, o.Metadata.Name)
			}
		}
		var sts appsv1.StatefulSet
		decode(t, find(t, objs, "StatefulSet", stsName), &sts)
		if m := sts.Spec.Template.Spec.AutomountServiceAccountToken; m == nil || *m {
			t.Errorf("heartbeat mode mounts a service account token")
		}
	})
}

func hasEnvFrom(c corev1.Container, secret string) bool {
	for _, e := range c.EnvFrom {
		if e.SecretRef != nil && e.SecretRef.Name == secret {
			return true
		}
	}
	return false
}

// checkHardened checks a container of the chart's own image (worker, init job).
func checkHardened(t *testing.T, what string, pod *corev1.PodSpec, ctr *corev1.Container) {
	t.Helper()
	ps := pod.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != 65532 ||
		ps.FSGroup == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext %+v", what, ps)
	}
	sc := ctr.SecurityContext
	if sc == nil {
		t.Fatalf("%s: container %s has no securityContext", what, ctr.Name)
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
		t.Errorf("%s: container %s may run as root", what, ctr.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: container %s: root file system writable", what, ctr.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: container %s: privilege escalation allowed", what, ctr.Name)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: container %s: capabilities %+v, want drop ALL", what, ctr.Name, sc.Capabilities)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: container %s: seccomp %+v", what, ctr.Name, sc.SeccompProfile)
	}
}

func checkStatefulSet(t *testing.T, sts *appsv1.StatefulSet, replicas int32) {
	t.Helper()
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != replicas {
		t.Errorf("replicas = %v, want %d", sts.Spec.Replicas, replicas)
	}
	if sts.Spec.ServiceName != stsName {
		t.Errorf("serviceName = %q", sts.Spec.ServiceName)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy = %q", sts.Spec.PodManagementPolicy)
	}
	pod := &sts.Spec.Template.Spec
	if pod.ServiceAccountName != stsName {
		t.Errorf("serviceAccountName = %q", pod.ServiceAccountName)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds <= 20 {
		t.Errorf("terminationGracePeriodSeconds = %v, want more than SHUTDOWN_TIMEOUT (20s)", pod.TerminationGracePeriodSeconds)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	ctr := &pod.Containers[0]
	checkHardened(t, "StatefulSet", pod, ctr)
	if ctr.Image != defaultImage(t) || ctr.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s (%s)", ctr.Image, ctr.ImagePullPolicy)
	}
	if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil {
		t.Errorf("preStop hook present; the worker drains on SIGTERM itself")
	}
	fieldEnv := map[string]string{}
	for _, e := range ctr.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			fieldEnv[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if fieldEnv["WORKER_ID"] != "metadata.name" || fieldEnv["POD_NAMESPACE"] != "metadata.namespace" {
		t.Errorf("downward API env = %v, want WORKER_ID from metadata.name, POD_NAMESPACE from metadata.namespace", fieldEnv)
	}
	if len(ctr.EnvFrom) == 0 || ctr.EnvFrom[0].ConfigMapRef == nil || ctr.EnvFrom[0].ConfigMapRef.Name != cmName {
		t.Errorf("envFrom = %+v, want ConfigMap %s", ctr.EnvFrom, cmName)
	}
	if len(ctr.Ports) != 1 || ctr.Ports[0].ContainerPort != 8080 || ctr.Ports[0].Name != "http" {
		t.Errorf("ports = %+v", ctr.Ports)
	}
	// Liveness on /live (the worker's loops still end their calls), not /health: a DynamoDB
	// outage fails /health on every worker and restarts cannot fix it; readiness reports it.
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"liveness", "/live", ctr.LivenessProbe}, {"startup", "/ready", ctr.StartupProbe}, {"readiness", "/health", ctr.ReadinessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe: %+v, want %s", p.name, p.probe, p.path)
		}
	}
	if p := ctr.StartupProbe; p != nil && p.PeriodSeconds*p.FailureThreshold < 300 {
		t.Errorf("startup probe allows %ds to start, want at least 5m to check AWS access and join", p.PeriodSeconds*p.FailureThreshold)
	}
	if ctr.Resources.Requests.Memory().IsZero() || ctr.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v", ctr.Resources)
	}
	if sts.Spec.Template.Annotations["checksum/config"] == "" {
		t.Errorf("no checksum/config annotation: config changes would not roll the workers")
	}
}

func checkJob(t *testing.T, job *batchv1.Job, localstack bool) {
	t.Helper()
	pod := &job.Spec.Template.Spec
	if job.Spec.BackoffLimit == nil || *job.Spec.BackoffLimit < 3 || job.Spec.ActiveDeadlineSeconds == nil {
		t.Errorf("job retries: backoffLimit %v, activeDeadlineSeconds %v", job.Spec.BackoffLimit, job.Spec.ActiveDeadlineSeconds)
	}
	if pod.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %q", pod.RestartPolicy)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	ctr := &pod.Containers[0]
	checkHardened(t, "Job", pod, ctr)
	cmd := strings.Join(append(slices.Clone(ctr.Command), ctr.Args...), " ")
	if cmd != "kdsctl create-stream test-stream --shards 30" {
		t.Errorf("init job runs %q", cmd)
	}
	if ctr.Image != defaultImage(t) {
		t.Errorf("init job image %q, want the worker image", ctr.Image)
	}
	if localstack {
		if len(pod.InitContainers) != 1 || !strings.Contains(strings.Join(pod.InitContainers[0].Command, " "), "/_localstack/health") {
			t.Errorf("init job does not wait for LocalStack: %+v", pod.InitContainers)
		} else {
			checkHardened(t, "Job", pod, &pod.InitContainers[0])
		}
	} else if len(pod.InitContainers) != 0 {
		t.Errorf("real-AWS mode: init containers %+v", pod.InitContainers)
	}
	if m := pod.AutomountServiceAccountToken; m == nil || *m {
		t.Errorf("init job mounts a Kubernetes API token it does not need")
	}
}

func checkLocalStack(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	ctr := d.Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(ctr.Image, "localstack/localstack:") || strings.HasSuffix(ctr.Image, ":latest") {
		t.Errorf("LocalStack image %q, want a pinned localstack/localstack tag", ctr.Image)
	}
	env := map[string]string{}
	for _, e := range ctr.Env {
		env[e.Name] = e.Value
	}
	if env["SERVICES"] != "kinesis,dynamodb" {
		t.Errorf("SERVICES = %q", env["SERVICES"])
	}
	if len(ctr.Ports) != 1 || ctr.Ports[0].ContainerPort != 4566 {
		t.Errorf("ports %+v", ctr.Ports)
	}
	if p := ctr.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/_localstack/health" {
		t.Errorf("readiness probe %+v", p)
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	for _, tc := range []struct {
		set, want string
	}{
		{"consumer.replicaCount=-1", "/consumer/replicaCount"},
		{"consumer.replicaCount=1.5", "/consumer/replicaCount"},
		{"consumer.stream.initialShardCount=0", "/consumer/stream/initialShardCount"},
		{"consumer.stream.initialShardCount=10001", "/consumer/stream/initialShardCount"},
		{"consumer.app.maxLeasesCap=0", "/consumer/app/maxLeasesCap"},
		{"consumer.workerCountSource=magic", "/consumer/workerCountSource"},
		{"consumer.lease.duration=10 seconds", "/consumer/lease/duration"},
		{"consumer.lease.heartbeatInterval=2", "/consumer/lease/heartbeatInterval"},
		{"consumer.app.name=my app", "/consumer/app/name"},
		{"consumer.stream.name=a/b", "/consumer/stream/name"},
		{"consumer.name=Kds_Consumer", "/consumer/name"},
		{"namespace=Not A Namespace", "/namespace"},
		{"consumer.image.pullPolicy=Sometimes", "/consumer/image/pullPolicy"},
		{"consumer.image.tag=a tag", "/consumer/image/tag"},
		{"consumer.log.format=xml", "/consumer/log/format"},
		{"consumer.multilang.timeout=soon", "/consumer/multilang/timeout"},
		{"aws.region=Europe", "/aws/region"},
		{"localstack.services=s3", "/localstack/services"},
		{"consumer.replicaCunt=3", "replicaCunt"},
		{"consumer.extraEnv[0].value=x", "/consumer/extraEnv/0"},
		{"consumer.podDisruptionBudget.maxUnavailable=0", "/consumer/podDisruptionBudget/maxUnavailable"},
		{"consumer.livenessProbe.path=health", "/consumer/livenessProbe/path"},
		{"consumer.startupProbe.failureThreshold=0", "/consumer/startupProbe/failureThreshold"},
		{"aws.kmsKeyArn=my-key", "/aws/kmsKeyArn"},
		{"aws.accountId=1234", "/aws/accountId"},
		{"localstack.image.tag=", "/localstack/image/tag"},
		{"consumer.app.name=ab", "/consumer/app/name"},
		{"consumer.dashboard.port=8080", "/consumer/dashboard/port"},
		{"consumer.dashboard.port=80", "/consumer/dashboard/port"},
		// Cross-field rules that the templates check.
		{"consumer.shutdownTimeout=40s", "consumer.terminationGracePeriodSeconds"},
		{"consumer.app.enableDynamicMaxLeases=false,consumer.app.staticMaxLeases=100", "consumer.app.staticMaxLeases"},
		{"consumer.initialPosition=AT_TIMESTAMP", "consumer.initialTimestamp"},
		{"consumer.onProcessorFailure.policy=ignore", "/consumer/onProcessorFailure/policy"},
		{"consumer.onProcessorFailure.policy=dead-letter", "consumer.onProcessorFailure.deadLetterStream"},
		{"monitoring.serviceMonitor.enabled=yes", "/monitoring/serviceMonitor/enabled"},
		{"monitoring.serviceMonitor.interval=30", "/monitoring/serviceMonitor/interval"},
		{"monitoring.prometheusRule.enabled=1", "/monitoring/prometheusRule/enabled"},
		{"monitoring.grafanaDashboard.lables.a=b", "lables"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			t.Parallel()
			_, stderr, err := c.Helm(testCtx(t), "template", releaseName, chartDir(t), "--set", tc.set)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded", tc.set)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("helm template --set %s: error does not name %s:\n%s", tc.set, tc.want, stderr)
			}
		})
	}
}

// monitoringOn are the values that render every monitoring object, with extra labels.
var monitoringOn = []string{
	"--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.serviceMonitor.labels.release=prom",
	"--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.prometheusRule.labels.release=prom",
	"--set", "monitoring.grafanaDashboard.enabled=true", "--set", "monitoring.grafanaDashboard.labels.release=prom",
	"--set", "monitoring.grafanaDashboard.annotations.grafana_folder=Kinesis",
}

// rendered renders the chart with helm template (no apiserver: it has no CRDs for the
// Prometheus Operator's kinds) and returns the objects by kind/name, decoded from YAML.
func rendered(t *testing.T, c *kubetest.Cluster, args ...string) map[string]map[string]any {
	t.Helper()
	out := mustHelm(t, c, append([]string{"template", releaseName, chartDir(t)}, args...)...)
	objs := map[string]map[string]any{}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		if o == nil {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		objs[fmt.Sprint(o["kind"], "/", md["name"])] = o
	}
	return objs
}

// chartFile reads a file of the chart's files/ directory.
func chartFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "files", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dig returns the value at a path of nested maps (nil when missing).
func dig(v any, path ...string) any {
	for _, k := range path {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// The ServiceMonitor, the PrometheusRule and the Grafana board ConfigMap are off by
// default and, when enabled, carry the shipped files as they are and select the workers'
// Service only.
func TestMonitoringObjects(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	const (
		smKey   = "ServiceMonitor/" + stsName
		ruleKey = "PrometheusRule/" + stsName
		dashKey = "ConfigMap/" + stsName + "-dashboard"
	)
	for _, tc := range []struct {
		name        string
		args        []string
		want        []string // the monitoring objects rendered
		extraLabels bool     // they carry release=prom
	}{
		{"default", nil, nil, false},
		{"all", monitoringOn, []string{dashKey, ruleKey, smKey}, true},
		{"rules only", []string{"--set", "monitoring.prometheusRule.enabled=true"}, []string{ruleKey}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := rendered(t, c, tc.args...)
			var got []string
			for _, k := range []string{dashKey, ruleKey, smKey} {
				if objs[k] != nil {
					got = append(got, k)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("monitoring objects %v, want %v", got, tc.want)
			}
			for _, k := range got {
				labels, _ := dig(objs[k], "metadata", "labels").(map[string]any)
				if (labels["release"] == "prom") != tc.extraLabels {
					t.Errorf("%s labels %v: extra label release=prom: want %v", k, labels, tc.extraLabels)
				}
				if labels["app.kubernetes.io/instance"] != releaseName {
					t.Errorf("%s labels %v: not the chart's", k, labels)
				}
			}
			if sm := objs[smKey]; sm != nil {
				svc := objs["Service/"+stsName]
				sel, _ := dig(sm, "spec", "selector", "matchLabels").(map[string]any)
				for _, name := range []string{stsName, lsName} {
					svcLabels, _ := dig(objs["Service/"+name], "metadata", "labels").(map[string]any)
					matches := len(sel) > 0
					for k, v := range sel {
						matches = matches && svcLabels[k] == v
					}
					if matches != (name == stsName) {
						t.Errorf("ServiceMonitor selector %v matches Service %s: %v", sel, name, matches)
					}
				}
				eps, _ := dig(sm, "spec", "endpoints").([]any)
				port, _ := dig(svc, "spec", "ports").([]any)
				if len(eps) != 1 || dig(eps[0], "port") != "http" || dig(eps[0], "path") != "/metrics" || dig(eps[0], "interval") != "30s" ||
					len(port) != 1 || dig(port[0], "name") != "http" {
					t.Errorf("ServiceMonitor endpoints %v, Service ports %v", eps, port)
				}
			}
			if rule := objs[ruleKey]; rule != nil {
				var want map[string]any
				if err := yaml.Unmarshal(chartFile(t, "alerts.yaml"), &want); err != nil {
					t.Fatal(err)
				}
				if got := dig(rule, "spec"); !reflect.DeepEqual(got, want) {
					t.Errorf("PrometheusRule spec is not files/alerts.yaml:\n%v", got)
				}
			}
			if dash := objs[dashKey]; dash != nil {
				labels, _ := dig(dash, "metadata", "labels").(map[string]any)
				if labels["grafana_dashboard"] != "1" || dig(dash, "metadata", "annotations", "grafana_folder") != "Kinesis" {
					t.Errorf("dashboard ConfigMap metadata %v", dig(dash, "metadata"))
				}
				data, _ := dig(dash, "data").(map[string]any)
				board, _ := data["kds-lease-manager.json"].(string)
				if keys := slices.Collect(maps.Keys(data)); len(keys) != 1 || board != strings.TrimSuffix(string(chartFile(t, "dashboard.json")), "\n") || !json.Valid([]byte(board)) {
					t.Errorf("dashboard ConfigMap data keys %v: not files/dashboard.json, or not JSON", keys)
				}
			}
		})
	}
}

// promtool checks the shipped alert rules and runs their unit tests, which test every
// alert of the file.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := promtoolPath(t)
	rules := filepath.Join(chartDir(t), "files", "alerts.yaml")
	tests := filepath.Join(repoRoot(t), "deploy", "monitoring", "alerts_test.yaml")
	for _, args := range [][]string{{"check", "rules", rules}, {"test", "rules", tests}} {
		out, err := exec.CommandContext(testCtx(t), promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	testFile, err := os.ReadFile(tests)
	if err != nil {
		t.Fatal(err)
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\w+)\s*$`).FindAllStringSubmatch(string(chartFile(t, "alerts.yaml")), -1)
	if len(alerts) < 7 {
		t.Fatalf("%d alerts in files/alerts.yaml, want at least 7", len(alerts))
	}
	for _, a := range alerts {
		fires := regexp.MustCompile(`(?m)^\s*alertname: ` + a[1] + `\s*\n\s*exp_alerts:\s*\n\s*- exp_labels:`)
		if !fires.Match(testFile) {
			t.Errorf("alert %s has no unit test in %s that shows it firing", a[1], tests)
		}
	}
}

// promtoolPath returns promtool's path, failing the test when it is missing.
func promtoolPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (Debian: apt-get install -y prometheus; .ci/run installs it): "+
			"the alert rules and the board's queries cannot be checked: %v", err)
	}
	return p
}

// Every query of the Grafana board is valid PromQL: promtool checks them as recording
// rules, with the board's variables replaced by values.
func TestBoardQueries(t *testing.T) {
	t.Parallel()
	promtool := promtoolPath(t)
	var board struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(chartFile(t, "dashboard.json"), &board); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$__rate_interval", "2m", "$namespace", "prod", "$job", "kds-consumer")
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" || strings.Contains(vars.Replace(tg.Expr), "$") {
				t.Errorf("panel %q: query %q is empty or has an unknown variable", p.Title, tg.Expr)
				continue
			}
			rules = append(rules, rule{Record: fmt.Sprintf("board_query_%d", len(rules)), Expr: vars.Replace(tg.Expr)})
		}
	}
	if len(rules) < 20 {
		t.Fatalf("%d queries on the board, want at least 20", len(rules))
	}
	file := map[string]any{"groups": []any{map[string]any{"name": "board", "rules": rules}}}
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "board-rules.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(testCtx(t), promtool, "check", "rules", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("SUCCESS: %d rules found", len(rules))) {
		t.Errorf("promtool check rules of the board's queries: %v\n%s\n%s", err, out, b)
	}
}

// install installs the chart (no --wait: nothing runs) into a fresh namespace and returns it.
func install(t *testing.T, c *kubetest.Cluster, extra ...string) (ns, notes string) {
	t.Helper()
	ns = c.Namespace(t)
	args := append([]string{"install", releaseName, chartDir(t), "--namespace", ns,
		"--set", "namespace=" + ns, "--set", "createNamespace=false"}, extra...)
	out := mustHelm(t, c, args...)
	return ns, out
}

func TestInstall(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	ns, notes := install(t, c)
	for _, want := range []string{"StatefulSet " + stsName, "make monitor", "make metadata", "kubectl -n " + ns, "kdsctl metadata"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}

	var sts appsv1.StatefulSet
	getJSON(t, c, &sts, "statefulset", stsName, "-n", ns)
	checkStatefulSet(t, &sts, 3)

	var cm corev1.ConfigMap
	getJSON(t, c, &cm, "configmap", cmName, "-n", ns)
	if cm.Data["WORKER_COUNT_SOURCE"] != "kubernetes" || cm.Data["STATEFULSET_NAME"] != stsName {
		t.Errorf("ConfigMap data %v", cm.Data)
	}

	var role rbacv1.Role
	getJSON(t, c, &role, "role", stsName, "-n", ns)
	want := []rbacv1.PolicyRule{{
		APIGroups: []string{"apps"}, Resources: []string{"statefulsets"},
		ResourceNames: []string{stsName}, Verbs: []string{"get", "list", "watch"},
	}}
	if fmt.Sprint(role.Rules) != fmt.Sprint(want) {
		t.Errorf("Role rules = %+v, want %+v", role.Rules, want)
	}
	var rb rbacv1.RoleBinding
	getJSON(t, c, &rb, "rolebinding", stsName, "-n", ns)
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != stsName || len(rb.Subjects) != 1 ||
		rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != stsName || rb.Subjects[0].Namespace != ns {
		t.Errorf("RoleBinding %+v %+v", rb.RoleRef, rb.Subjects)
	}

	var svc corev1.Service
	getJSON(t, c, &svc, "service", stsName, "-n", ns)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || len(svc.Spec.Ports) != 1 ||
		svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].Name != "http" {
		t.Errorf("headless Service: clusterIP %q ports %+v", svc.Spec.ClusterIP, svc.Spec.Ports)
	}
	for k, v := range svc.Spec.Selector {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not select the worker pods", k, v)
		}
	}

	var job batchv1.Job
	getJSON(t, c, &job, "job", stsName+"-init-stream-1", "-n", ns)
	checkJob(t, &job, true)

	var ls appsv1.Deployment
	getJSON(t, c, &ls, "deployment", lsName, "-n", ns)
	checkLocalStack(t, &ls)
	var lsSvc corev1.Service
	getJSON(t, c, &lsSvc, "service", lsName, "-n", ns)
	if len(lsSvc.Spec.Ports) != 1 || lsSvc.Spec.Ports[0].Port != 4566 {
		t.Errorf("localstack Service ports %+v", lsSvc.Spec.Ports)
	}

	// Every object of the release carries the standard labels.
	out := mustKubectl(t, c, "get", "statefulsets,deployments,jobs,services,configmaps,secrets,serviceaccounts,roles,rolebindings",
		"-n", ns, "-l", "app.kubernetes.io/instance="+releaseName, "-o", "json")
	objs := objectList(t, out)
	if len(objs) != 10 {
		t.Errorf("%d labelled objects, want 10: %v", len(objs), kinds(objs))
	}
	for _, o := range objs {
		checkLabels(t, o, releaseName)
	}

	t.Run("rbac", func(t *testing.T) { checkRBAC(t, c, ns) })
}

// checkRBAC acts with a real token of the worker's ServiceAccount.
func checkRBAC(t *testing.T, c *kubetest.Cluster, ns string) {
	// Objects the worker must not see: another StatefulSet here, its namesake elsewhere.
	other := c.Namespace(t)
	sts := func(name string) string {
		return fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":%q},
"spec":{"replicas":1,"serviceName":%[1]q,"selector":{"matchLabels":{"app":%[1]q}},
"template":{"metadata":{"labels":{"app":%[1]q}},"spec":{"containers":[{"name":"c","image":"registry.invalid/x:1"}]}}}}`, name)
	}
	for _, x := range []struct{ ns, name string }{{ns, "other"}, {other, stsName}} {
		if _, _, err := c.KubectlStdin(testCtx(t), sts(x.name), "apply", "-n", x.ns, "-f", "-"); err != nil {
			t.Fatal(err)
		}
	}
	mustKubectl(t, c, "create", "secret", "generic", "s", "-n", ns, "--from-literal=k=v")

	token, err := c.Token(testCtx(t), ns, stsName, "--duration=10m")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := c.KubeconfigFor(token)
	if err != nil {
		t.Fatal(err)
	}
	as := func(args ...string) (string, error) {
		out, _, err := c.KubectlAs(testCtx(t), kc, args...)
		return out, err
	}

	// Allowed: what the worker does.
	if out, err := as("get", "statefulset", stsName, "-n", ns, "-o", "jsonpath={.spec.replicas}"); err != nil || out != "3" {
		t.Errorf("get own StatefulSet: %q, %v", out, err)
	}
	if out, err := as("get", "statefulsets", "-n", ns, "--field-selector", "metadata.name="+stsName, "-o", "name"); err != nil ||
		strings.TrimSpace(out) != "statefulset.apps/"+stsName {
		t.Errorf("list with field selector: %q, %v", out, err)
	}
	watch := "/apis/apps/v1/namespaces/" + ns + "/statefulsets?fieldSelector=metadata.name%3D" + stsName + "&watch=true&timeoutSeconds=1"
	if out, err := as("get", "--raw", watch); err != nil || !strings.Contains(out, `"type":"ADDED"`) || !strings.Contains(out, `"name":"`+stsName+`"`) {
		t.Errorf("watch with field selector: %.300q, %v", out, err)
	}

	// Forbidden: everything else.
	for _, args := range [][]string{
		{"get", "statefulsets", "-n", ns},            // list without the field selector
		{"get", "statefulset", "other", "-n", ns},    // another StatefulSet
		{"get", "statefulset", stsName, "-n", other}, // another namespace
		{"get", "statefulsets", "-n", other, "--field-selector", "metadata.name=" + stsName},
		{"get", "secrets", "-n", ns},
		{"get", "secret", "s", "-n", ns},
		{"get", "pods", "-n", ns},
		{"get", "configmaps", "-n", ns},
		{"get", "statefulset", stsName, "-n", ns, "--subresource=scale"},
		{"scale", "statefulset", stsName, "-n", ns, "--replicas=1"},
		{"patch", "statefulset", stsName, "-n", ns, "--type=merge", "-p", `{"spec":{"replicas":1}}`},
		{"delete", "statefulset", stsName, "-n", ns},
	} {
		_, err := as(args...)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "forbidden") {
			t.Errorf("kubectl %s as the worker: %v, want Forbidden", strings.Join(args, " "), err)
		}
	}

	// The same by SelfSubjectAccessReview.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "statefulsets.apps/" + stsName}, "yes"},
		{[]string{"list", "statefulsets.apps/" + stsName}, "yes"},
		{[]string{"watch", "statefulsets.apps/" + stsName}, "yes"},
		{[]string{"list", "statefulsets.apps"}, "no"},
		{[]string{"get", "statefulsets.apps/other"}, "no"},
		{[]string{"update", "statefulsets.apps/" + stsName}, "no"},
		{[]string{"patch", "statefulsets.apps/" + stsName, "--subresource=scale"}, "no"},
		{[]string{"update", "statefulsets.apps/" + stsName, "--subresource=scale"}, "no"},
		{[]string{"get", "statefulsets.apps/" + stsName, "--subresource=scale"}, "no"},
		{[]string{"get", "secrets"}, "no"},
		{[]string{"list", "pods"}, "no"},
		{[]string{"get", "statefulsets.apps/" + stsName, "-n", other}, "no"},
	} {
		args := append([]string{"auth", "can-i"}, tc.args...)
		if !slices.Contains(tc.args, "-n") {
			args = append(args, "-n", ns)
		}
		out, err := as(args...)
		got := strings.TrimSpace(out)
		if got != tc.want || (tc.want == "yes") != (err == nil) {
			t.Errorf("kubectl auth can-i %s: %q (%v), want %s", strings.Join(tc.args, " "), got, err, tc.want)
		}
	}
}

func TestCreateNamespaceRefusesAnExistingNamespace(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	_, stderr, err := c.Helm(testCtx(t), "install", releaseName, chartDir(t), "-n", ns, "--set", "namespace="+ns,
		"--set", "createNamespace=true")
	if err == nil {
		t.Fatal("install with createNamespace=true into an existing namespace succeeded")
	}
	if !strings.Contains(stderr, "createNamespace=false") {
		t.Errorf("error does not say what to do:\n%s", stderr)
	}
}

func TestUpgradeAndUninstall(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	// The release record lives in one namespace, the chart creates another for its objects
	// (namespace and createNamespace set), as in `helm install kds <chart> --set namespace=kds-test`.
	releaseNS := c.Namespace(t)
	ns := releaseNS + "-app"
	t.Cleanup(func() {
		_, _, _ = c.Kubectl(testCtx(t), "delete", "namespace", ns, "--ignore-not-found", "--wait=false")
	})
	mustHelm(t, c, "install", releaseName, chartDir(t), "-n", releaseNS, "--set", "namespace="+ns, "--set", "createNamespace=true")
	var nsObj corev1.Namespace
	getJSON(t, c, &nsObj, "namespace", ns)
	checkLabels(t, object{Kind: "Namespace", Metadata: meta{Name: ns, Labels: nsObj.Labels}}, releaseName)

	replicas := func() string {
		return mustKubectl(t, c, "get", "statefulset", stsName, "-n", ns, "-o", "jsonpath={.spec.replicas}")
	}
	if got := replicas(); got != "3" {
		t.Fatalf("replicas after install = %s", got)
	}
	mustHelm(t, c, "upgrade", releaseName, chartDir(t), "-n", releaseNS, "--reset-then-reuse-values", "--set", "consumer.replicaCount=5")
	if got := replicas(); got != "5" {
		t.Errorf("replicas after upgrade = %s, want 5", got)
	}
	// The init job of revision 1 is replaced by revision 2's (a Job's template is immutable).
	jobs := mustKubectl(t, c, "get", "jobs", "-n", ns, "-o", "name")
	if strings.TrimSpace(jobs) != "job.batch/"+stsName+"-init-stream-2" {
		t.Errorf("jobs after upgrade: %q", jobs)
	}
	if got := mustHelm(t, c, "get", "values", releaseName, "-n", releaseNS, "-o", "json"); !strings.Contains(got, `"replicaCount":5`) {
		t.Errorf("release values %s", got)
	}
	// The README's rule: scale with helm values; the next helm upgrade undoes a kubectl scale.
	mustKubectl(t, c, "scale", "statefulset", stsName, "-n", ns, "--replicas=2")
	mustHelm(t, c, "upgrade", releaseName, chartDir(t), "-n", releaseNS, "--reset-then-reuse-values")
	if got := replicas(); got != "5" {
		t.Errorf("replicas after kubectl scale --replicas=2 and helm upgrade = %s, want 5 (consumer.replicaCount)", got)
	}

	mustHelm(t, c, "uninstall", releaseName, "-n", releaseNS)
	left := mustKubectl(t, c, "get", "statefulsets,deployments,jobs,services,configmaps,secrets,serviceaccounts,roles,rolebindings",
		"-n", ns, "-o", "name")
	if strings.TrimSpace(left) != "" {
		t.Errorf("left after uninstall:\n%s", left)
	}
	// Without a controller-manager a deleted namespace stays Terminating.
	phase, _, err := c.Kubectl(testCtx(t), "get", "namespace", ns, "-o", "jsonpath={.status.phase}")
	if err == nil && phase != "Terminating" {
		t.Errorf("namespace %s after uninstall: %s", ns, phase)
	}
	if out, _, _ := c.Helm(testCtx(t), "list", "-n", releaseNS, "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("releases after uninstall: %q", out)
	}
}

// defaultImage is the worker image of the default values: the tag is the chart's appVersion.
func defaultImage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &chart); err != nil || chart.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion: %q %v", chart.AppVersion, err)
	}
	return "kds-consumer-test:" + chart.AppVersion
}

// Names derive from the release (consumer.name empty): two releases share a namespace.
func TestTwoReleasesInOneNamespace(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	for _, tc := range []struct {
		label      string
		args       func(rel string) []string
		localstack bool
		app        func(rel string) string
	}{
		// Default values: each release gets its own workers, LocalStack and tables.
		{"defaults", func(string) []string { return nil }, true, func(rel string) string { return rel + "-app" }},
		{"production", func(rel string) []string {
			return []string{"-f", filepath.Join(chartDir(t), "values-production.yaml"),
				"--set", "consumer.stream.name=" + rel, "--set", "consumer.app.name=" + rel + "-consumer"}
		}, false, func(rel string) string { return rel + "-consumer" }},
	} {
		t.Run(tc.label, func(t *testing.T) {
			t.Parallel()
			ns := c.Namespace(t)
			for _, rel := range []string{"orders", "payments"} {
				mustHelm(t, c, append([]string{"install", rel, chartDir(t), "-n", ns}, tc.args(rel)...)...)
			}
			for _, rel := range []string{"orders", "payments"} {
				var sts appsv1.StatefulSet
				getJSON(t, c, &sts, "statefulset", rel, "-n", ns)
				if sts.Spec.Template.Spec.ServiceAccountName != rel || sts.Labels["app.kubernetes.io/instance"] != rel {
					t.Errorf("release %s: StatefulSet serviceAccountName %q labels %v", rel, sts.Spec.Template.Spec.ServiceAccountName, sts.Labels)
				}
				var cm corev1.ConfigMap
				getJSON(t, c, &cm, "configmap", rel+"-config", "-n", ns)
				if cm.Data["STATEFULSET_NAME"] != rel || cm.Data["APP_NAME"] != tc.app(rel) {
					t.Errorf("release %s: ConfigMap %v, want STATEFULSET_NAME %s and APP_NAME %s", rel, cm.Data, rel, tc.app(rel))
				}
				if !tc.localstack {
					continue
				}
				var ls appsv1.Deployment
				getJSON(t, c, &ls, "deployment", rel+"-localstack", "-n", ns)
				var svc corev1.Service
				getJSON(t, c, &svc, "service", rel+"-localstack", "-n", ns)
				if svc.Spec.Selector["app.kubernetes.io/instance"] != rel || ls.Spec.Template.Labels["app.kubernetes.io/instance"] != rel {
					t.Errorf("release %s: LocalStack Service selects %v, pods labelled %v", rel, svc.Spec.Selector, ls.Spec.Template.Labels)
				}
				if want := "http://" + rel + "-localstack." + ns + ".svc:4566"; cm.Data["AWS_ENDPOINT_URL"] != want {
					t.Errorf("release %s: AWS_ENDPOINT_URL %q, want its own LocalStack %q", rel, cm.Data["AWS_ENDPOINT_URL"], want)
				}
			}
		})
	}
}

// TestUpgradeKeepsTheCheckpoints: helm upgrade refuses to move an installed release to
// another lease table or stream (the workers would start over from the initial position),
// naming the value that keeps it, including when only a default changed (chart 0.2.0's
// consumer.app.name kds-consumer-app); allowCheckpointReset accepts it.
func TestUpgradeKeepsTheCheckpoints(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	const rel = "kds-lease-manager"
	// As chart 0.2.0's defaults rendered it.
	mustHelm(t, c, "install", rel, chartDir(t), "-n", ns, "--set", "consumer.name=kds-consumer", "--set", "consumer.app.name=kds-consumer-app")
	appName := func() string {
		t.Helper()
		var list struct {
			Items []corev1.ConfigMap `json:"items"`
		}
		getJSON(t, c, &list, "configmap", "-n", ns, "-l", "app.kubernetes.io/instance="+rel+",app.kubernetes.io/component=consumer")
		var names []string
		for _, cm := range list.Items {
			if v, ok := cm.Data["APP_NAME"]; ok {
				names = append(names, cm.Name+"="+v+"/"+cm.Data["STREAM_NAME"])
			}
		}
		return strings.Join(names, ",")
	}
	for _, step := range []struct {
		label   string
		set     []string
		refused []string // what the error must name; nil: the upgrade goes through
		after   string   // the worker ConfigMap afterwards: name=APP_NAME/STREAM_NAME
	}{
		{"new defaults", nil, []string{"kds-consumer-app", "kds-lease-manager-app", "--set consumer.app.name=kds-consumer-app"},
			"kds-consumer-config=kds-consumer-app/test-stream"},
		{"the old app name kept", []string{"consumer.app.name=kds-consumer-app"}, nil, "kds-lease-manager-config=kds-consumer-app/test-stream"},
		{"another lease table", []string{"consumer.app.name=kds-consumer-app", "consumer.leaseTable=kcl-orders"},
			[]string{"kds-consumer-app", "kcl-orders", "allowCheckpointReset"}, "kds-lease-manager-config=kds-consumer-app/test-stream"},
		{"another stream", []string{"consumer.app.name=kds-consumer-app", "consumer.stream.name=orders"},
			[]string{"test-stream", "orders", "allowCheckpointReset"}, "kds-lease-manager-config=kds-consumer-app/test-stream"},
		{"reset accepted", []string{"consumer.stream.name=orders", "consumer.allowCheckpointReset=true"}, nil,
			"kds-lease-manager-config=kds-lease-manager-app/orders"},
	} {
		args := []string{"upgrade", rel, chartDir(t), "-n", ns, "--reset-values"} // these values only
		for _, kv := range step.set {
			args = append(args, "--set", kv)
		}
		_, stderr, err := c.Helm(testCtx(t), args...)
		switch {
		case step.refused == nil && err != nil:
			t.Fatalf("%s: %v\n%s", step.label, err, stderr)
		case step.refused != nil && err == nil:
			t.Errorf("%s: the upgrade went through; want it refused", step.label)
		}
		for _, w := range step.refused {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: the error does not name %q:\n%s", step.label, w, stderr)
			}
		}
		if got := appName(); got != step.after {
			t.Errorf("%s: worker ConfigMap %s, want %s", step.label, got, step.after)
		}
	}
}
