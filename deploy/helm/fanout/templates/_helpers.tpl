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

{{/* The ports of a pod of slot .slot, as a JSON list of {name, port, protocol, relay}: the UDP
     media ports, ICE-TCP's, the embedded TURN server's and its relay ports (relay: listed as
     container ports only with hostPort exposure). Slot N shifts each range past slot N-1's. */}}
{{- define "fanout.ports" -}}
{{- $v := .root.Values -}}
{{- $slot := int .slot -}}
{{- $d := int $v.media.drivers -}}
{{- /* One UDP port that every driver shares, or one per driver with udpPortPerDriver. */ -}}
{{- $u := ternary $d 1 (default false $v.media.udpPortPerDriver) -}}
{{- $ports := list -}}
{{- range $i := until $u -}}
{{- $ports = append $ports (dict "name" (printf "media-%d" $i) "port" (add $v.media.udpPort (mul $slot $u) $i) "protocol" "UDP") -}}
{{- end -}}
{{- if $v.media.iceTcp.enabled -}}
{{- range $i := until $d -}}
{{- $ports = append $ports (dict "name" (printf "ice-tcp-%d" $i) "port" (add $v.media.iceTcp.port (mul $slot $d) $i) "protocol" "TCP") -}}
{{- end -}}
{{- end -}}
{{- if $v.turn.enabled -}}
{{- $tp := add $v.turn.port $slot -}}
{{- $ports = append $ports (dict "name" "turn-udp" "port" $tp "protocol" "UDP") -}}
{{- $ports = append $ports (dict "name" "turn-tcp" "port" $tp "protocol" "TCP") -}}
{{- if $v.turn.tls.enabled -}}
{{- $ports = append $ports (dict "name" "turn-tls" "port" (add $v.turn.tls.port $slot) "protocol" "TCP") -}}
{{- end -}}
{{- $rs := include "fanout.relayStart" . | int -}}
{{- range $i := until (int $v.turn.relayPorts.count) -}}
{{- $ports = append $ports (dict "name" "" "port" (add $rs $i) "protocol" "UDP" "relay" true) -}}
{{- end -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}

{{- define "fanout.relayStart" -}}
{{- add .root.Values.turn.relayPorts.start (mul (int .slot) .root.Values.turn.relayPorts.count) -}}
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
{{- fail "config.tls_cert/tls_key cannot be used with Redis: the pods relay joins to each other over plain HTTP, so terminate TLS in front of them (an Ingress); TURN over TLS takes its own certificate (turn.tls.secretName)" -}}
{{- end -}}
{{- if and .Values.turn.tls.enabled (not .Values.turn.enabled) -}}
{{- fail "turn.tls.enabled needs turn.enabled: TURN over TLS is the embedded TURN server's" -}}
{{- end -}}
{{- if and .Values.turn.enabled .Values.turn.tls.enabled (not .Values.turn.tls.secretName) -}}
{{- fail "turn.tls.enabled needs turn.tls.secretName: a kubernetes.io/tls Secret with the certificate of config.turn_host" -}}
{{- end -}}
{{- /* No two ports of the release's pods may meet on a node: the ranges of every slot, each
       protocol apart, and the HTTP port. */ -}}
{{- $seen := dict (printf "TCP/%d" (int .Values.http.port)) "http.port" -}}
{{- range $slot := include "fanout.slots" . | fromJsonArray -}}
{{- range $p := include "fanout.ports" (dict "root" $ "slot" $slot) | fromJsonArray -}}
{{- $key := printf "%s/%d" $p.protocol (int $p.port) -}}
{{- $what := printf "slot %d's %s" (int $slot) (ternary "TURN relay port" $p.name (hasKey $p "relay")) -}}
{{- if gt (int $p.port) 65535 -}}
{{- fail (printf "%s would be port %d, beyond 65535: lower the port or the slots" $what (int $p.port)) -}}
{{- end -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "port collision: %s and %s both use %s; move one of the ranges (media.udpPort, media.iceTcp.port, turn.port, turn.tls.port, turn.relayPorts)" (get $seen $key) $what $key) -}}
{{- end -}}
{{- $_ := set $seen $key $what -}}
{{- end -}}
{{- end -}}
{{- end -}}
