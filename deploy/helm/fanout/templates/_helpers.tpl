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

{{/* The chart's own Redis (redis.deploy.enabled): its name and pod labels, which differ from
     the Fanout pods' so neither Service nor the PodDisruptionBudget selects the other's pods. */}}
{{- define "fanout.redisName" -}}
{{- printf "%s-redis" (include "fanout.fullname" .) -}}
{{- end -}}

{{- define "fanout.redisSelector" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fanout.redisLabels" -}}
{{ include "fanout.redisSelector" . }}
app.kubernetes.io/component: redis
app.kubernetes.io/part-of: {{ include "fanout.name" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Redis the Fanout pods use (FANOUT_REDIS_URL); empty: a single node. */}}
{{- define "fanout.redisURL" -}}
{{- if .Values.redis.url -}}
{{- .Values.redis.url -}}
{{- else if .Values.redis.deploy.enabled -}}
{{- printf "redis://%s.%s.svc:6379" (include "fanout.redisName" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The most Fanout pods this release can run: per Deployment (replicas, or the autoscaler's
     maximum) times the Deployments (hostPort slots). */}}
{{- define "fanout.maxPods" -}}
{{- $perSlot := ternary .Values.autoscaling.maxReplicas .Values.replicas .Values.autoscaling.enabled | int -}}
{{- mul $perSlot (len (include "fanout.slots" . | fromJsonArray)) -}}
{{- end -}}

{{/* Combinations the schema cannot refuse: fail the render with the reason. */}}
{{- define "fanout.validate" -}}
{{- if and .Values.redis.url .Values.redis.deploy.enabled -}}
{{- fail "redis.url and redis.deploy.enabled are both set: use either an external Redis (redis.url) or the chart's own (redis.deploy.enabled), not both" -}}
{{- end -}}
{{- $pods := include "fanout.maxPods" . | int -}}
{{- if and (gt $pods 1) (not (include "fanout.redisURL" .)) -}}
{{- fail (printf "this release can run %d Fanout pods (replicas, autoscaling.maxReplicas or media.hostPortSlots above 1) but has no Redis: several replicas need Redis, since a single-node Fanout cannot share rooms between pods (the participants of one room would land on different pods and not see each other). Set redis.url (an external Redis) or redis.deploy.enabled=true, or run one pod (replicas=1, autoscaling.enabled=false, media.hostPortSlots=1)" $pods) -}}
{{- end -}}
{{- if and (include "fanout.redisURL" .) (or .Values.config.tls_cert .Values.config.tls_key) -}}
{{- fail "config.tls_cert/tls_key cannot be used with Redis: the pods relay joins to each other over plain HTTP, so terminate TLS in front of them (an Ingress)" -}}
{{- end -}}
{{- end -}}
