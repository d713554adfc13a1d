{{/* Object names are fixed: Arc looks up its ConfigMap and Secret by these names. */}}
{{- define "arc-gateway.name" -}}arc-gateway{{- end -}}

{{- define "arc-gateway.selectorLabels" -}}
app.kubernetes.io/name: arc-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "arc-gateway.labels" -}}
{{ include "arc-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: arc-gateway
{{- end -}}

{{- define "arc-gateway.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* namespace/name of the Service written into Ingress status. */}}
{{- define "arc-gateway.publishService" -}}
{{- if .Values.config.kubernetes.publishService -}}
{{ .Values.config.kubernetes.publishService }}
{{- else if .Values.nodePort.enabled -}}
{{ .Release.Namespace }}/arc-gateway-nodeport
{{- else -}}
{{ .Release.Namespace }}/arc-gateway
{{- end -}}
{{- end -}}

{{/*
The control-plane token: the given value, else the one already stored in the release's Secret
(lookup; empty when rendering offline), else a new random one. The manifests' placeholder is
never accepted.
*/}}
{{- define "arc-gateway.authToken" -}}
{{- $token := .Values.controlPlane.authToken -}}
{{- if not $token -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace "arc-gateway-secret" -}}
{{- if and $existing $existing.data (hasKey $existing.data "auth-token") -}}
{{- $token = index $existing.data "auth-token" | b64dec -}}
{{- end -}}
{{- end -}}
{{- if not $token -}}
{{- $token = randAlphaNum 48 -}}
{{- end -}}
{{- if contains "__ARC_TOKEN__" $token -}}
{{- fail "controlPlane.authToken: the placeholder __ARC_TOKEN__ must be replaced by a real token (or left empty to generate one)" -}}
{{- end -}}
{{- $token -}}
{{- end -}}

{{/* A TOML string (basic string, escaped through JSON which TOML basic strings accept). */}}
{{- define "arc-gateway.tomlString" -}}
{{- . | toString | toJson -}}
{{- end -}}
