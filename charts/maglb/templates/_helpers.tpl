{{/* The base of every name: "metallb" (as upstream's chart) unless overridden. */}}
{{- define "maglb.name" -}}
{{- default "metallb" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, as upstream's chart forms it. */}}
{{- define "maglb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "maglb.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "maglb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "maglb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "maglb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "maglb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The service account of a component: (dict "root" $ "component" "controller"). */}}
{{- define "maglb.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount }}
{{- if $sa.create }}
{{- default (printf "%s-%s" (include "maglb.fullname" .root) (.component | kebabcase)) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{- define "maglb.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/* Liveness or readiness probe on the health port: (dict "probe" ... "path" "/healthz" "port" "health"). */}}
{{- define "maglb.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
failureThreshold: {{ .probe.failureThreshold }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
successThreshold: {{ .probe.successThreshold }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
{{- end }}

{{/* The TLS flags both components take. */}}
{{- define "maglb.tlsArgs" -}}
{{- with .Values.tls.cipherSuites }}
- --tls-cipher-suites={{ . }}
{{- end }}
{{- with .Values.tls.curvePreferences }}
- --tls-curve-preferences={{ . }}
{{- end }}
{{- with .Values.tls.minVersion }}
- --tls-min-version={{ . }}
{{- end }}
{{- end }}

{{- define "maglb.scrapeAnnotations" -}}
{{- if .root.Values.prometheus.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
{{- end }}
{{- with .podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Tolerations that let a DaemonSet run on control-plane nodes. */}}
{{- define "maglb.controlPlaneTolerations" -}}
- key: node-role.kubernetes.io/control-plane
  operator: Exists
  effect: NoSchedule
- key: node-role.kubernetes.io/master
  operator: Exists
  effect: NoSchedule
{{- end }}
