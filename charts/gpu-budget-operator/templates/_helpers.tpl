{{/* Names ------------------------------------------------------------------ */}}

{{- define "gpu-budget-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpu-budget-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gpu-budget-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpu-budget-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-budget-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gpu-budget-operator.labels" -}}
helm.sh/chart: {{ include "gpu-budget-operator.chart" . }}
{{ include "gpu-budget-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpu-budget-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gpu-budget-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpu-budget-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: the operator's identity is rendered into the admission policies" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gpu-budget-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "gpu-budget-operator.peeringName" -}}
{{- default (include "gpu-budget-operator.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{- define "gpu-budget-operator.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "gpu-budget-operator.fullname" .) }}
{{- end }}

{{- define "gpu-budget-operator.clusterwide" -}}
{{- if not .Values.operator.namespaces }}true{{- end }}
{{- end }}

{{/* The peering is used unless standalone; the chart refuses standalone with replicas > 1. */}}
{{- define "gpu-budget-operator.peering" -}}
{{- if not .Values.operator.standalone }}true{{- end }}
{{- end }}

{{/* Webhooks are served by in-cluster pods (Service + certificate) unless webhook.url points elsewhere. */}}
{{- define "gpu-budget-operator.webhookInCluster" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.url) }}true{{- end }}
{{- end }}

{{/* Admission --------------------------------------------------------------- */}}

{{/* JSON list of the usernames the admission policies treat as the operator. */}}
{{- define "gpu-budget-operator.operatorUsernames" -}}
{{- $sa := printf "system:serviceaccount:%s:%s" .Release.Namespace (include "gpu-budget-operator.serviceAccountName" .) }}
{{- concat (list $sa) .Values.admissionPolicies.extraOperatorUsernames | uniq | toJson }}
{{- end }}

{{- define "gpu-budget-operator.policyNamePrefix" -}}
{{- default "gpubudget.dev-" .Values.admissionPolicies.namePrefix }}
{{- end }}

{{/*
A namespace selector: `base` (a selector), restricted to operator.namespaces when the
operator serves a list, plus `matchLabels`. Call with (dict "root" $ "base" ... "matchLabels" ...).
*/}}
{{- define "gpu-budget-operator.namespaceSelector" -}}
{{- $root := .root }}
{{- $base := .base | default dict }}
{{- $labels := merge (dict) (.matchLabels | default dict) ($base.matchLabels | default dict) }}
{{- $expressions := $base.matchExpressions | default list }}
{{- with $root.Values.operator.namespaces }}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" "In" "values" .) }}
{{- end }}
{{- $selector := dict }}
{{- if $labels }}{{- $_ := set $selector "matchLabels" $labels }}{{- end }}
{{- if $expressions }}{{- $_ := set $selector "matchExpressions" $expressions }}{{- end }}
{{- toYaml $selector }}
{{- end }}

{{- define "gpu-budget-operator.policyNamespaceSelector" -}}
{{- include "gpu-budget-operator.namespaceSelector" (dict "root" .root "base" .root.Values.admissionPolicies.namespaceSelector "matchLabels" .matchLabels) }}
{{- end }}

{{- define "gpu-budget-operator.webhookNamespaceSelector" -}}
{{- include "gpu-budget-operator.namespaceSelector" (dict "root" . "base" .Values.webhook.namespaceSelector) }}
{{- end }}

{{/* clientConfig of one webhook: (dict "root" $ "path" "/hold-jobs" "caBundle" "<base64>") */}}
{{- define "gpu-budget-operator.webhookClientConfig" -}}
{{- $root := .root }}
{{- if $root.Values.webhook.url -}}
url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) .path | quote }}
{{- else -}}
service:
  name: {{ include "gpu-budget-operator.fullname" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ .path | quote }}
  port: {{ $root.Values.service.webhookPort }}
{{- end }}
{{- with .caBundle }}
caBundle: {{ . }}
{{- end }}
{{- end }}

{{/* Checks of values that the schema cannot express ----------------------------- */}}
{{- define "gpu-budget-operator.validate" -}}
{{- if and .Values.operator.standalone (gt (int .Values.operator.replicas) 1) }}
{{- fail (printf "operator.standalone=true with operator.replicas=%d: standalone replicas do not coordinate and would each enforce every budget. Use one replica, or leave standalone false (kopf peering keeps one replica active)." (int .Values.operator.replicas)) }}
{{- end }}
{{- if and .Values.webhook.url (not .Values.webhook.caBundle) }}
{{- fail "webhook.url is set (development mode) but webhook.caBundle is empty: the API server must verify the certificate served at that URL. Give the CA that signed it, e.g. --set-file webhook.caBundle=.local/webhook/ca.crt" }}
{{- end }}
{{- if and .Values.webhook.url (not (hasPrefix "https://" .Values.webhook.url)) }}
{{- fail (printf "webhook.url=%q must start with https://: the API server calls webhooks over HTTPS only" .Values.webhook.url) }}
{{- end }}
{{- if and .Values.webhook.url .Values.operator.enabled .Values.webhook.enabled }}
{{- fail "webhook.url is set (development mode: the webhooks call an operator outside the cluster) but operator.enabled is true: the in-cluster replicas would serve no webhook. Set operator.enabled=false for development mode, or unset webhook.url." }}
{{- end }}
{{- if and .Values.budgetPolicy.create (ne (len (.Values.budgetPolicy.defaultWarnAt | uniq)) (len .Values.budgetPolicy.defaultWarnAt)) }}
{{- fail (printf "budgetPolicy.defaultWarnAt=%v has duplicates; each threshold may appear once" .Values.budgetPolicy.defaultWarnAt) }}
{{- end }}
{{- end }}

{{/* RBAC rules on namespaced resources (a ClusterRole's, or each served namespace's Role). */}}
{{- define "gpu-budget-operator.namespacedRules" -}}
# Budgets: watched and accounted (kopf writes its progress and a finalizer into them).
- apiGroups: [gpubudget.dev]
  resources: [trainingbudgets]
  verbs: [list, watch, patch]
- apiGroups: [gpubudget.dev]
  resources: [trainingbudgets/status]
  verbs: [patch]
# GPU pods are metered; bare pods are released (patch) or stopped (delete); pods get the
# stop-at annotation before a planned stop.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch, delete]
# Workloads are held, released and stopped through their suspend switch; the admission
# webhook gets the owner a new Job or pod names, to check it really is its budgeted owner.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, patch]
- apiGroups: [jobset.x-k8s.io]
  resources: [jobsets]
  verbs: [get, list, watch, patch]
- apiGroups: [kubeflow.org]
  resources: [pytorchjobs]
  verbs: [get, list, watch, patch]
# What the operator decided, on the budget and the workload.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
