{{/* Names, labels and the operator's RBAC rules (one definition, used by every binding mode). */}}

{{- define "lms-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lms-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lms-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lms-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lms-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lms-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lms-operator.labels" -}}
{{ include "lms-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lms
app.kubernetes.io/component: operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "lms-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Rules for namespaced resources: exactly the calls the operator makes (deploy/rbac/clusterrole.yaml
is the source of truth; tests/unit/test_chart.py keeps the two identical). No wildcards.
*/}}
{{- define "lms-operator.namespacedRules" -}}
# The resource itself: watched, and read when no watch event has delivered it; only its status is written.
- apiGroups: [serving.lms.dev]
  resources: [largemodelservices]
  verbs: [get, list, watch]
- apiGroups: [serving.lms.dev]
  resources: [largemodelservices/status]
  verbs: [get, patch]
# Compression Jobs: created with a deterministic name, watched to re-reconcile the owner, and
# deleted (exactly the one, by uid) when the version it published is gone from the repository.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# The Job's pods: the compression summary is their termination message.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# The repository claim must exist (read only: the operator never creates storage).
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
# Serving objects, written with server-side apply.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, patch]
# Autoscalers: applied, and the other kind read (owner check) and deleted by uid when the kind switches.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, create, patch, delete]
# Events on the resource for each step.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Peering objects in a namespace (several replicas: only one acts).
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end -}}

{{/* Rules for cluster-scoped resources. */}}
{{- define "lms-operator.clusterRules" -}}
# kopf scans CRDs at start-up to resolve the watched resources.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if not .Values.watchNamespaces }}
# Peering (cluster-wide operator).
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}

{{/* Refuse values that would weaken the restricted pod security profile. */}}
{{- define "lms-operator.checkSecurity" -}}
{{- $c := .Values.securityContext -}}
{{- $p := .Values.podSecurityContext -}}
{{- if or (not $c.readOnlyRootFilesystem) $c.allowPrivilegeEscalation $c.privileged (not $c.runAsNonRoot) (not $p.runAsNonRoot) -}}
{{- fail "securityContext: the operator runs non-root, unprivileged, with a read-only root filesystem and no privilege escalation; these cannot be turned off" -}}
{{- end -}}
{{- if or (eq (int $p.runAsUser) 0) (ne (toString $c.capabilities.drop) "[ALL]") (ne $p.seccompProfile.type "RuntimeDefault") -}}
{{- fail "securityContext: runAsUser must not be 0, capabilities.drop must be [ALL] and seccompProfile.type RuntimeDefault" -}}
{{- end -}}
{{- if $c.capabilities.add -}}
{{- fail "securityContext.capabilities.add: the operator needs no capabilities" -}}
{{- end -}}
{{- range .Values.watchNamespaces -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) -}}
{{- fail (printf "watchNamespaces: %q is not a valid namespace name" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The serving templates as ConfigMap data: the chart's files, each replaced or joined by a value. */}}
{{- define "lms-operator.modelRepoTemplates" -}}
{{- $templates := dict -}}
{{- range $path, $_ := .Files.Glob "model-repo-templates/*.pbtxt" -}}
{{- $_ := set $templates (base $path) ($.Files.Get $path) -}}
{{- end -}}
{{- range $name, $text := .Values.modelRepoTemplates -}}
{{- $_ := set $templates (printf "%s.pbtxt" $name) $text -}}
{{- end -}}
{{- toYaml $templates -}}
{{- end -}}
