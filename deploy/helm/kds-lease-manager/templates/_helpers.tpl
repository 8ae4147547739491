{{/* Chart name: app.kubernetes.io/name. */}}
{{- define "kds.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Namespace of every object of the chart: the release's (helm install -n NS) unless
the namespace value overrides it. */}}
{{- define "kds.namespace" -}}
{{- .Values.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* helm.sh/chart: name-version. */}}
{{- define "kds.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the StatefulSet, its headless Service, Role and RoleBinding, and the stem of
every other object's name: consumer.name if set, else the release name (the default), so
that two releases fit in one namespace. */}}
{{- define "kds.consumer.name" -}}
{{- .Values.consumer.name | default .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "kds.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "kds.consumer.name" .) -}}
{{- end -}}

{{/* The worker image: consumer.image.tag, else the chart's appVersion. */}}
{{- define "kds.consumer.image" -}}
{{- $i := .Values.consumer.image -}}
{{- include "kds.image" (dict "repository" $i.repository "tag" ($i.tag | default .Chart.AppVersion)) -}}
{{- end -}}

{{- define "kds.configMapName" -}}
{{- printf "%s-config" (include "kds.consumer.name" .) -}}
{{- end -}}

{{- define "kds.propertiesConfigMapName" -}}
{{- include "kds.consumer.name" . }}-properties
{{- end -}}

{{/* Where the KCL .properties file (consumer.multilang.properties) is mounted. */}}
{{- define "kds.propertiesPath" -}}
/etc/kds-consumer/app.properties
{{- end -}}

{{- define "kds.localstackSecretName" -}}
{{- printf "%s-localstack-credentials" (include "kds.consumer.name" .) -}}
{{- end -}}

{{/* The application name (tables <app> and <app>_meta): consumer.app.name, else
<consumer name>-app, so that two releases with default values use tables of their own. */}}
{{- define "kds.appName" -}}
{{- .Values.consumer.app.name | default (printf "%s-app" (include "kds.consumer.name" .)) -}}
{{- end -}}

{{/* The lease table, which holds the checkpoints: consumer.leaseTable (a KCL table taken
over), else the application name. */}}
{{- define "kds.leaseTableName" -}}
{{- .Values.consumer.leaseTable | default (include "kds.appName" .) -}}
{{- end -}}

{{/* Name of this revision's init job: a label value on its pods, so at most 63
characters with the longest revision number. */}}
{{- define "kds.initJobName" -}}
{{- printf "%s-init-stream-%d" (include "kds.consumer.name" . | trunc 40 | trimSuffix "-") (int .Release.Revision) -}}
{{- end -}}

{{/* Name of the in-cluster LocalStack's Deployment and Service. */}}
{{- define "kds.localstackName" -}}
{{- printf "%s-localstack" (include "kds.consumer.name" .) -}}
{{- end -}}

{{/* The in-cluster LocalStack endpoint (only with localstack.enabled). */}}
{{- define "kds.localstackEndpoint" -}}
{{- printf "http://%s.%s.svc:%d" (include "kds.localstackName" .) (include "kds.namespace" .) (int .Values.localstack.port) -}}
{{- end -}}

{{/*
Selector labels of a component; they never change between upgrades (selectors are
immutable). Call with (dict "ctx" $ "component" "consumer").
*/}}
{{- define "kds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kds.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All standard labels of a component. Call like kds.selectorLabels. */}}
{{- define "kds.labels" -}}
{{ include "kds.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kds-lease-manager
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "kds.chart" .ctx }}
{{- end -}}

{{/* Image reference from an image value (repository, tag). */}}
{{- define "kds.image" -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}

{{/*
Seconds of a duration value matching ^[0-9]+(ms|s|m)$ (rounded up), for comparisons.
*/}}
{{- define "kds.durationSeconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d -}}
{{- div (add (trimSuffix "ms" $d | int64) 999) 1000 -}}
{{- else if hasSuffix "s" $d -}}
{{- trimSuffix "s" $d | int64 -}}
{{- else if hasSuffix "m" $d -}}
{{- mul (trimSuffix "m" $d | int64) 60 -}}
{{- else -}}
{{- fail (printf "cannot read duration %q: want a number with ms, s or m" $d) -}}
{{- end -}}
{{- end -}}

{{/*
Checks that the schema cannot express (cross-field rules); rendered by every template
that needs them, so `helm template` fails with a message naming the values.
*/}}
{{- define "kds.validate" -}}
{{- $shutdown := include "kds.durationSeconds" .Values.consumer.shutdownTimeout | int64 -}}
{{- $grace := .Values.consumer.terminationGracePeriodSeconds | int64 -}}
{{- if le $grace $shutdown -}}
{{- fail (printf "consumer.terminationGracePeriodSeconds (%d) must be larger than consumer.shutdownTimeout (%s): Kubernetes kills a worker at the end of the grace period, before it has released its leases" $grace .Values.consumer.shutdownTimeout) -}}
{{- end -}}
{{- if and (not .Values.consumer.app.enableDynamicMaxLeases) (gt (int .Values.consumer.app.staticMaxLeases) (int .Values.consumer.app.maxLeasesCap)) -}}
{{- fail (printf "consumer.app.staticMaxLeases (%d) must not exceed consumer.app.maxLeasesCap (%d)" (int .Values.consumer.app.staticMaxLeases) (int .Values.consumer.app.maxLeasesCap)) -}}
{{- end -}}
{{- with .Values.consumer.onProcessorFailure -}}
{{- if and (eq .policy "dead-letter") (not .deadLetterStream) -}}
{{- fail "consumer.onProcessorFailure.deadLetterStream is required when consumer.onProcessorFailure.policy is dead-letter" -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.consumer.initialPosition "AT_TIMESTAMP") (not .Values.consumer.initialTimestamp) -}}
{{- fail "consumer.initialTimestamp is required when consumer.initialPosition is AT_TIMESTAMP (RFC 3339, e.g. 2026-01-02T15:04:05Z)" -}}
{{- end -}}
{{- end -}}

{{/*
On an upgrade, refuses a change of the lease table (consumer.app.name or
consumer.leaseTable, also through a changed default) or of the stream read with it, unless
consumer.allowCheckpointReset: the checkpoints are in the lease table and belong to its
stream, so either change makes the workers start over from consumer.initialPosition
(records read twice or skipped). The installed values are read from the release's worker
ConfigMap on the cluster (lookup); `helm template` and first installs skip the check.
*/}}
{{- define "kds.checkpointGuard" -}}
{{- if and .Release.IsUpgrade (not .Values.consumer.allowCheckpointReset) -}}
{{- $table := include "kds.leaseTableName" . -}}
{{- $stream := .Values.consumer.stream.name -}}
{{- range (lookup "v1" "ConfigMap" (include "kds.namespace" .) "").items -}}
{{- $l := .metadata.labels | default dict -}}
{{- if and (eq (get $l "app.kubernetes.io/instance") $.Release.Name) (eq (get $l "app.kubernetes.io/component") "consumer") (hasKey (.data | default dict) "APP_NAME") -}}
{{- $oldTable := .data.LEASE_TABLE | default .data.APP_NAME -}}
{{- if ne $oldTable $table -}}
{{- fail (printf "the lease table would change from %s to %s (consumer.app.name / consumer.leaseTable; the chart derives the app name from the release when consumer.app.name is empty): the workers would lose their checkpoints and start over from consumer.initialPosition. Keep it with --set consumer.app.name=%s (or consumer.leaseTable), or accept the reset with --set consumer.allowCheckpointReset=true" $oldTable $table $oldTable) -}}
{{- end -}}
{{- if ne .data.STREAM_NAME $stream -}}
{{- fail (printf "consumer.stream.name would change from %s to %s while the lease table %s holds the checkpoints of %s: use another consumer.app.name for the new stream, or accept the reset with --set consumer.allowCheckpointReset=true" .data.STREAM_NAME $stream $table .data.STREAM_NAME) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The hardened container securityContext of the worker and the init job. */}}
{{- define "kds.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kds.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
