{{- define "fanout.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "fanout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fanout.labels" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fanout.selector" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fanout.secretName" -}}
{{- default (include "fanout.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{/* The Deployments: one in hostNetwork mode, one per slot in hostPort mode. */}}
{{- define "fanout.slots" -}}
{{- if eq .Values.media.exposure "hostPort" -}}
{{- until (int .Values.media.hostPortSlots) | toJson -}}
{{- else -}}
{{- list 0 | toJson -}}
{{- end -}}
{{- end -}}

{{- define "fanout.slotName" -}}
{{- if eq .root.Values.media.exposure "hostPort" -}}
{{- printf "%s-slot-%d" (include "fanout.fullname" .root) (int .slot) -}}
{{- else -}}
{{- include "fanout.fullname" .root -}}
{{- end -}}
{{- end -}}
