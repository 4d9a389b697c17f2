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

{{/* The image reference: repository@sha256:... when a digest is given (what runs cannot change
under the same name), else repository:tag. */}}
{{- define "payouts.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What each component runs and needs. `callers`: the components that call it over gRPC (the
README's who-calls-whom); `platform`: whether the platform's own workloads call it;
`secrets`: the secret settings it is given (least privilege).
*/}}
{{- define "payouts.catalog" -}}
gateway:
  args: [gateway]
  secrets: [CRON_SECRET, CRON_API_KEY]
webhooks:
  args: [serve, webhooks]
  grpcService: payouts.webhooks.v1.WebhooksService
  callers: [gateway]
  platform: false
  secrets: [MONGODB_URI, STRIPE_WEBHOOK_SECRET_PAYOUTS, STRIPE_WEBHOOK_SECRET_TRANSFERS, STRIPE_WEBHOOK_SECRET, STRIPE_SECRET_KEY]
payouts:
  args: [serve, payouts]
  grpcService: payouts.payouts.v1.PayoutsService
  callers: [gateway, webhooks, limits, approvals, balance, notifications]
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
{{- if eq .component "all" -}}
{{- /* The all-in-one process is every service: the platform's callers check the name of the
service they call (payouts-disputes, ...), so its certificate carries all of them. */ -}}
{{- range $name := keys (include "payouts.catalog" .root | fromYaml) | sortAlpha -}}
{{- if ne $name "gateway" -}}
{{- $names = append $names (printf "payouts-%s" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml (uniq $names) -}}
{{- end -}}

{{/* Refuses a configuration whose gRPC port would be open without mutual TLS, split or all in
one: the all-in-one process listens on 0.0.0.0 in a pod, so whoever reaches its port could call
RecordAllocation, HandleStripeEvent, DecideApproval and move money. */}}
{{- define "payouts.checkTls" -}}
{{- if and (not .Values.tls.enabled) (not .Values.tls.allowPlaintext) -}}
{{- if .Values.allInOne -}}
{{- fail "tls.enabled=false with allInOne=true leaves the all-in-one gRPC port open without mutual TLS: anyone who reaches it could credit earnings, feed Stripe events or approve payouts. Enable tls (see docs/kubernetes.md), or set tls.allowPlaintext=true on a development cluster." -}}
{{- else -}}
{{- fail "tls.enabled=false runs the services apart without mutual TLS: every workload that reaches a gRPC port could move money. Enable tls (see docs/kubernetes.md), or set tls.allowPlaintext=true on a development cluster." -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.tls.allowPlaintext -}}
{{- fail "tls.allowPlaintext=true contradicts tls.enabled=true: choose one." -}}
{{- end -}}
{{- $platformCA := or .Values.tls.platformCA.secretName .Values.tls.platformCA.configMapName -}}
{{- if and .Values.tls.enabled .Values.tls.platformIdentities (not $platformCA) -}}
{{- fail "tls.platformIdentities is set but tls.platformCA is not: with one CA for both, anyone who can get a certificate from it named payouts-webhooks becomes the webhooks service. The components' certificates come from their own CA (this release's, by default); name the CA of the platform's callers in tls.platformCA.secretName (or configMapName) and tls.platformCA.key." -}}
{{- end -}}
{{- $config := merge (dict) .Values.extraConfig .Values.config -}}
{{- if and .Values.tls.allowPlaintext (eq (toString (index $config "STRIPE_LIVEMODE")) "true") -}}
{{- fail "tls.allowPlaintext=true with STRIPE_LIVEMODE=\"true\": plaintext gRPC is for development only; with live money whoever reaches a gRPC port could move it (the binary refuses PAYOUTS_ALLOW_PLAINTEXT_GRPC with a live configuration too). Enable tls." -}}
{{- end -}}
{{- if and .Values.tls.platformCA.secretName .Values.tls.platformCA.configMapName -}}
{{- fail "tls.platformCA: set secretName or configMapName, not both." -}}
{{- end -}}
{{- end -}}

{{/* How admins sign in: "jwks" (an identity provider's keys: a URL or a mounted file) or
"hs256" (a shared secret, development). */}}
{{- define "payouts.adminAuthMode" -}}
{{- $a := .Values.adminAuth -}}
{{- ternary "jwks" "hs256" (or (not (empty $a.jwksUrl)) (not (empty $a.jwks.secretName)) (not (empty $a.jwks.configMapName))) -}}
{{- end -}}

{{/* Refuses admin sign-in that would let someone in: a JWKS without issuer and audience, or
HS256 (whoever holds the secret mints any admin) with a live Stripe key unless explicitly
allowed. */}}
{{- define "payouts.checkAdminAuth" -}}
{{- $a := .Values.adminAuth -}}
{{- $config := merge (dict) .Values.extraConfig .Values.config -}}
{{- $sources := 0 -}}
{{- if $a.jwksUrl }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $a.jwks.secretName }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $a.jwks.configMapName }}{{ $sources = add1 $sources }}{{ end -}}
{{- if gt (int $sources) 1 -}}
{{- fail "adminAuth: set one of jwksUrl, jwks.secretName, jwks.configMapName." -}}
{{- end -}}
{{- if eq (include "payouts.adminAuthMode" .) "jwks" -}}
{{- if or (not $a.issuer) (not $a.audience) -}}
{{- fail "adminAuth.issuer and adminAuth.audience are required with a JWKS (ADMIN_JWT_ISSUER, ADMIN_JWT_AUDIENCE): an identity provider signs every tenant's tokens with the same keys." -}}
{{- end -}}
{{- else if and (eq (toString (index $config "STRIPE_LIVEMODE")) "true") (ne (toString (index $config "ADMIN_JWT_ALLOW_HS256")) "true") -}}
{{- fail "STRIPE_LIVEMODE=true with HS256 admin tokens (ADMIN_JWT_SECRET): whoever holds the secret can mint a token for any admin and approve their own payout under another name. Set adminAuth.jwksUrl (or adminAuth.jwks), adminAuth.issuer and adminAuth.audience (OpenID Connect), or config.ADMIN_JWT_ALLOW_HS256: \"true\" to accept the risk." -}}
{{- end -}}
{{- end -}}

{{/* Refuses an Ingress that would publish the cron endpoint without ingress.exposeCron. */}}
{{- define "payouts.checkIngress" -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.exposeCron) -}}
{{- range .Values.ingress.paths -}}
{{- $prefix := trimSuffix "/" . -}}
{{- if or (eq $prefix "/api/cron") (hasPrefix (printf "%s/" $prefix) "/api/cron/") -}}
{{- fail (printf "ingress.paths has %s, which publishes /api/cron: the in-cluster CronJob calls the gateway's Service directly. Set ingress.exposeCron=true for an external scheduler." .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The admin sign-in environment of the gateway's container; call with (dict "root" $). */}}
{{- define "payouts.adminAuthEnv" -}}
{{- $a := .root.Values.adminAuth -}}
{{- if eq (include "payouts.adminAuthMode" .root) "jwks" }}
{{- if $a.jwksUrl }}
- name: ADMIN_JWT_JWKS_URL
  value: {{ $a.jwksUrl | quote }}
{{- else }}
- name: ADMIN_JWT_JWKS_FILE
  value: /etc/payouts/admin-jwks/jwks.json
{{- end }}
- name: ADMIN_JWT_ISSUER
  value: {{ $a.issuer | quote }}
- name: ADMIN_JWT_AUDIENCE
  value: {{ $a.audience | quote }}
{{- with $a.roleClaim }}
- name: ADMIN_JWT_ROLE_CLAIM
  value: {{ . | quote }}
{{- end }}
{{- else }}
{{- include "payouts.secretEnv" (dict "root" .root "secrets" (list "ADMIN_JWT_SECRET")) }}
{{- end }}
{{- end -}}

{{/* The mounted JWKS file (mount, then volume); call with (dict "root" $). */}}
{{- define "payouts.adminJwksMount" -}}
{{- $a := .root.Values.adminAuth -}}
{{- if or $a.jwks.secretName $a.jwks.configMapName }}
- name: admin-jwks
  mountPath: /etc/payouts/admin-jwks
  readOnly: true
{{- end }}
{{- end -}}
{{- define "payouts.adminJwksVolume" -}}
{{- $a := .root.Values.adminAuth -}}
{{- if $a.jwks.secretName }}
- name: admin-jwks
  secret:
    secretName: {{ $a.jwks.secretName }}
    items: [{key: {{ $a.jwks.key | quote }}, path: jwks.json}]
{{- else if $a.jwks.configMapName }}
- name: admin-jwks
  configMap:
    name: {{ $a.jwks.configMapName }}
    items: [{key: {{ $a.jwks.key | quote }}, path: jwks.json}]
{{- end }}
{{- end -}}

{{/* Whether a component's pods get the platform callers' CA: under mutual TLS, with
tls.platformCA named, for the services the platform calls (and all in one). Call with
(dict "root" $ "platform" bool). */}}
{{- define "payouts.hasPlatformCA" -}}
{{- $ca := .root.Values.tls.platformCA -}}
{{- if and .root.Values.tls.enabled .platform (or $ca.secretName $ca.configMapName) -}}true{{- end -}}
{{- end -}}

{{/* The mutual-TLS environment of a component's container; call with (dict "root" $ "platform"
bool). GRPC_TLS_CA_FILE is the components' CA (this release's); GRPC_TLS_PLATFORM_CA_FILE the
platform callers' CA: a platform identity counts only from a certificate chaining to it, a
component identity only from one chaining to the components' CA. */}}
{{- define "payouts.tlsEnv" -}}
{{- if .root.Values.tls.enabled }}
- name: GRPC_TLS_CERT_FILE
  value: /etc/payouts/tls/tls.crt
- name: GRPC_TLS_KEY_FILE
  value: /etc/payouts/tls/tls.key
- name: GRPC_TLS_CA_FILE
  value: /etc/payouts/tls/ca.crt
{{- if include "payouts.hasPlatformCA" . }}
- name: GRPC_TLS_PLATFORM_CA_FILE
  value: /etc/payouts/platform-ca/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* The certificate volume mounts, and the volumes; call with (dict "root" $ "component" name
"platform" bool). */}}
{{- define "payouts.tlsMount" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: /etc/payouts/tls
  readOnly: true
{{- if include "payouts.hasPlatformCA" . }}
- name: platform-ca
  mountPath: /etc/payouts/platform-ca
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}
{{- define "payouts.tlsVolume" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "payouts.componentName" . }}-tls
    defaultMode: 0440
{{- if include "payouts.hasPlatformCA" . }}
{{- $ca := .root.Values.tls.platformCA }}
- name: platform-ca
  {{- if $ca.secretName }}
  secret:
    secretName: {{ $ca.secretName }}
    items: [{key: {{ $ca.key | quote }}, path: ca.crt}]
    defaultMode: 0440
  {{- else }}
  configMap:
    name: {{ $ca.configMapName }}
    items: [{key: {{ $ca.key | quote }}, path: ca.crt}]
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The issuer of the components' certificates: this release's own CA Issuer unless
tls.certManager.issuerRef names one. */}}
{{- define "payouts.componentIssuerRef" -}}
{{- if .Values.tls.certManager.issuerRef.name -}}
{{- toYaml .Values.tls.certManager.issuerRef -}}
{{- else -}}
name: {{ include "payouts.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- end -}}
{{- end -}}

{{/* The port the kubelet's gRPC probes use: the plaintext health port under mutual TLS. */}}
{{- define "payouts.probePort" -}}
{{- ternary .Values.ports.health .Values.ports.grpc .Values.tls.enabled -}}
{{- end -}}
