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

{{/* Name of the StatefulSet, its headless Service, Role and RoleBinding. */}}
{{/* consumer.name if set, else the release name: two releases with consumer.name=""
fit in one namespace. */}}
{{- define "kds.consumer.name" -}}
{{- .Values.consumer.name | default .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "kds.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "kds.consumer.name" .) -}}
{{- end -}}

{{/* The worker image: consumer.image.tag, else the chart's appVersion. */}}
{{- define "kds.consumer.image" -}}
{{- $i := .Values.consumer.image -}}
{{- printf "%s:%s" $i.repository (toString ($i.tag | default .Chart.AppVersion)) -}}
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

{{/* The in-cluster LocalStack endpoint (only with localstack.enabled). */}}
{{- define "kds.localstackEndpoint" -}}
{{- printf "http://localstack.%s.svc:%d" (include "kds.namespace" .) (int .Values.localstack.port) -}}
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
