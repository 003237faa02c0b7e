{{/* Names and labels shared by every template. */}}

{{- define "warmpool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "warmpool.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "warmpool.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "warmpool.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "warmpool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warmpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "warmpool.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "warmpool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "warmpool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "warmpool.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "warmpool.configMapName" -}}
{{- default (include "warmpool.fullname" .) .Values.configMap.name }}
{{- end }}

{{/* The controller's image; the copier Jobs run the same one unless copierImage is set. */}}
{{- define "warmpool.image" -}}
{{- $repo := required "image.repository is required" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The label the leader puts on its own pod (controller.LeaderLabel). */}}
{{- define "warmpool.leaderLabel" -}}
warmpool.io/leader
{{- end }}

{{/*
GOMEMLIMIT for goMemLimit: "auto" is 90% of resources.limits.memory in MiB (a Kubernetes quantity
of whole units: plain bytes, k/M/G/T or Ki/Mi/Gi/Ti), nothing without a memory limit; any other
value as is. A limit the template cannot read fails the install, naming the value to set.
*/}}
{{- define "warmpool.goMemLimit" -}}
{{- $v := .Values.goMemLimit | default "" | toString -}}
{{- if ne $v "auto" -}}
{{- $v -}}
{{- else -}}
{{- $limit := "" -}}
{{- with .Values.resources }}{{ with .limits }}{{ $limit = .memory | default "" | toString }}{{ end }}{{ end -}}
{{- if $limit -}}
{{- $m := regexFindAll "^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$" $limit 1 -}}
{{- if not $m -}}
{{- fail (printf "goMemLimit auto cannot read resources.limits.memory %q: set goMemLimit to a Go memory size (e.g. 400MiB) or \"\"" $limit) -}}
{{- end -}}
{{- $n := regexFind "^[0-9]+" $limit | atoi -}}
{{- $unit := trimPrefix (toString $n) $limit -}}
{{- $mult := get (dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776) $unit -}}
{{- printf "%dMiB" (div (mul $n $mult 9) 10485760) -}}
{{- end -}}
{{- end -}}
{{- end }}
