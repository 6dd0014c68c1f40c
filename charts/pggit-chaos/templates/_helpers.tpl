{{/* The chart name, or nameOverride. */}}
{{- define "pggit-chaos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: fullnameOverride, else the release name (with the chart name unless the
release name contains it); at most 50 characters so that suffixes fit in 63. */}}
{{- define "pggit-chaos.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pggit-chaos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "pggit-chaos.labels" -}}
helm.sh/chart: {{ include "pggit-chaos.chart" . }}
{{ include "pggit-chaos.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the release's objects. */}}
{{- define "pggit-chaos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pggit-chaos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's pod labels (also PGGIT_CHAOS_OPERATOR_POD_LABELS: never a target). */}}
{{- define "pggit-chaos.operatorSelectorLabels" -}}
{{ include "pggit-chaos.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "pggit-chaos.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "pggit-chaos.fullname" .)) .Values.operator.serviceAccount.name }}
{{- end }}

{{/* The runner and verification Jobs' ServiceAccount (one per namespace). */}}
{{- define "pggit-chaos.runnerServiceAccountName" -}}
{{- default (printf "%s-runner" (include "pggit-chaos.fullname" .)) .Values.runner.serviceAccount.name }}
{{- end }}

{{/* "true" when the exec faults are allowed: exec.enabled, or its deprecated old name
podPause.enabled. */}}
{{- define "pggit-chaos.execEnabled" -}}
{{- if or .Values.exec.enabled .Values.podPause.enabled }}true{{ else }}false{{ end }}
{{- end }}

{{- define "pggit-chaos.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The recorded API calls (api-calls.yaml) of one identity as RBAC rules: "namespaced" true
(Role-scoped resources) or false (cluster-scoped ones); pods/exec only with exec.enabled. */}}
{{- define "pggit-chaos.rules" -}}
{{- $root := index . 0 }}
{{- $identity := index . 1 }}
{{- $namespaced := index . 2 }}
{{- $calls := $root.Files.Get "api-calls.yaml" | fromYaml }}
{{- range $rule := get $calls $identity }}
{{- if and (eq $rule.namespaced $namespaced) (or (ne $rule.resource "pods/exec") (eq (include "pggit-chaos.execEnabled" $root) "true")) }}
- apiGroups: [{{ $rule.apiGroup | quote }}]
  resources: [{{ $rule.resource | quote }}]
  verbs: {{ toJson $rule.verbs }}
{{- end }}
{{- end }}
{{- end }}

{{/* The namespaces the chart grants in (JSON list): namespaces, plus demo.namespace with the
demo (its experiments must run); also with watchAllNamespaces, for the runner's ServiceAccount. */}}
{{- define "pggit-chaos.namespaces" -}}
{{- $namespaces := .Values.namespaces }}
{{- if .Values.demo.enabled }}
{{- $namespaces = append $namespaces .Values.demo.namespace }}
{{- end }}
{{- toJson (uniq $namespaces) }}
{{- end }}
