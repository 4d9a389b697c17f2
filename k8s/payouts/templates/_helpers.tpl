{{/* The chart name. */}}
{{- define "payouts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The resource name prefix: release-chart, or fullnameOverride. */}}
{{- define "payouts.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* helm.sh/chart label value. */}}
{{- define "payouts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The standard labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "payouts.labels" -}}
helm.sh/chart: {{ include "payouts.chart" .root }}
{{ include "payouts.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: payouts
{{- end -}}

{{/* Labels that select one component's pods. */}}
{{- define "payouts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payouts.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A component's resource name. */}}
{{- define "payouts.componentName" -}}
{{- printf "%s-%s" (include "payouts.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The image reference. */}}
{{- define "payouts.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
What each component runs and needs. `callers`: the components that call it over gRPC (the
README's who-calls-whom); `platform`: whether the platform's own workloads call it;
`secrets`: the secret settings it is given (least privilege).
*/}}
{{- define "payouts.catalog" -}}
gateway:
  args: [gateway]
  secrets: [ADMIN_JWT_SECRET, CRON_SECRET, CRON_API_KEY]
webhooks:
  args: [serve, webhooks]
  grpcService: payouts.webhooks.v1.WebhooksService
  callers: [gateway]
  platform: false
  secrets: [MONGODB_URI, STRIPE_WEBHOOK_SECRET_PAYOUTS, STRIPE_WEBHOOK_SECRET_TRANSFERS, STRIPE_WEBHOOK_SECRET, STRIPE_SECRET_KEY]
payouts:
  args: [serve, payouts]
  grpcService: payouts.payouts.v1.PayoutsService
  callers: [gateway, webhooks, limits, approvals, balance]
  platform: true
  secrets: [MONGODB_URI, STRIPE_SECRET_KEY]
limits:
  args: [serve, limits]
  grpcService: payouts.limits.v1.PayoutLimitsService
  callers: [gateway, payouts, balance]
  platform: true
  secrets: [MONGODB_URI]
approvals:
  args: [serve, approvals]
  grpcService: payouts.approvals.v1.ApprovalsService
  callers: [gateway, payouts]
  platform: false
  secrets: [MONGODB_URI]
disputes:
  args: [serve, disputes]
  grpcService: payouts.disputes.v1.DisputesService
  callers: [gateway, webhooks, limits, approvals, balance]
  platform: true
  secrets: [MONGODB_URI, STRIPE_SECRET_KEY]
balance:
  args: [serve, balance]
  grpcService: payouts.balance.v1.BalanceService
  callers: [gateway]
  platform: false
  secrets: [MONGODB_URI, STRIPE_SECRET_KEY]
notifications:
  args: [serve, notifications]
  grpcService: payouts.notifications.v1.NotificationsService
  callers: [gateway, webhooks, payouts, approvals, disputes, balance]
  platform: true
  secrets: [MONGODB_URI, SMTP_URL]
{{- end -}}

{{/* Environment entries for secret settings, by reference to existingSecret. */}}
{{- define "payouts.secretEnv" -}}
{{- $root := .root -}}
{{- range .secrets }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.existingSecret }}
      key: {{ index $root.Values.secretKeys . }}
      optional: true
{{- end }}
{{- end -}}

{{/* The pod spec parts every component shares. */}}
{{- define "payouts.podCommon" -}}
automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The topology spread constraint of a component; call with (dict "root" $ "component" name). */}}
{{- define "payouts.topologySpread" -}}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .root.Values.topologySpread.maxSkew }}
    topologyKey: {{ .root.Values.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ .root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "payouts.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}


{{/* The names of a component's certificate: its identity first, then its Service's names. */}}
{{- define "payouts.certificateNames" -}}
{{- $service := include "payouts.componentName" . -}}
{{- $namespace := .root.Release.Namespace -}}
{{- $names := list (printf "payouts-%s" .component) $service (printf "%s.%s.svc" $service $namespace) (printf "%s.%s.svc.cluster.local" $service $namespace) -}}
{{- toYaml (uniq $names) -}}
{{- end -}}

{{/* Refuses a configuration that would run the components apart without mutual TLS. */}}
{{- define "payouts.checkTls" -}}
{{- if and (not .Values.allInOne) (not .Values.tls.enabled) (not .Values.tls.allowPlaintext) -}}
{{- fail "tls.enabled=false runs the services apart without mutual TLS: every workload that reaches a gRPC port could move money. Enable tls (see docs/kubernetes.md), or set tls.allowPlaintext=true on a development cluster." -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.tls.allowPlaintext -}}
{{- fail "tls.allowPlaintext=true contradicts tls.enabled=true: choose one." -}}
{{- end -}}
{{- end -}}

{{/* The mutual-TLS environment of a component's container; call with (dict "root" $). */}}
{{- define "payouts.tlsEnv" -}}
{{- if .root.Values.tls.enabled }}
- name: GRPC_TLS_CERT_FILE
  value: /etc/payouts/tls/tls.crt
- name: GRPC_TLS_KEY_FILE
  value: /etc/payouts/tls/tls.key
- name: GRPC_TLS_CA_FILE
  value: /etc/payouts/tls/ca.crt
{{- end }}
{{- end -}}

{{/* The certificate volume mount, and the volume; call with (dict "root" $ "component" name). */}}
{{- define "payouts.tlsMount" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: /etc/payouts/tls
  readOnly: true
{{- end }}
{{- end -}}
{{- define "payouts.tlsVolume" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "payouts.componentName" . }}-tls
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* The port the kubelet's gRPC probes use: the plaintext health port under mutual TLS. */}}
{{- define "payouts.probePort" -}}
{{- ternary .Values.ports.health .Values.ports.grpc .Values.tls.enabled -}}
{{- end -}}
