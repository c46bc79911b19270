{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "guardstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource: <release>-<chart> unless overridden; trimmed so that
suffixes such as "-stream-app" still fit in 63 characters.
*/}}
{{- define "guardstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "guardstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "stream-app").
*/}}
{{- define "guardstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guardstream.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Standard labels of one component. Call with (dict "ctx" $ "component" "stream-app").
*/}}
{{- define "guardstream.labels" -}}
helm.sh/chart: {{ include "guardstream.chart" .ctx }}
{{ include "guardstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: guardstream
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
Name of the ServiceAccount every pod runs as.
*/}}
{{- define "guardstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "guardstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Images.
*/}}
{{- define "guardstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "guardstream.tritonImage" -}}
{{- printf "%s:%s" .Values.triton.image.repository (default .Chart.AppVersion .Values.triton.image.tag) }}
{{- end }}

{{/*
Triton Service name and the gRPC address the stream app and the retrain job call.
*/}}
{{- define "guardstream.tritonName" -}}
{{- printf "%s-triton" (include "guardstream.fullname" .) }}
{{- end }}

{{- define "guardstream.tritonGrpcAddress" -}}
{{- printf "%s.%s.svc:8001" (include "guardstream.tritonName" .) .Release.Namespace }}
{{- end }}

{{/* Every ready Triton replica's gRPC address: the headless Service's name resolves to each. */}}
{{- define "guardstream.tritonReplicasAddress" -}}
{{- printf "%s-replicas.%s.svc:8001" (include "guardstream.tritonName" .) .Release.Namespace }}
{{- end }}

{{/*
Name of the model repository PersistentVolumeClaim.
*/}}
{{- define "guardstream.modelClaimName" -}}
{{- if .Values.modelRepository.pvc.create }}
{{- printf "%s-models" (include "guardstream.fullname" .) }}
{{- else }}
{{- .Values.modelRepository.pvc.existingClaim }}
{{- end }}
{{- end }}

{{/*
Triton's model-repository API answers only requests carrying this key in the
guardstream-model-control header (training/promote.py MODEL_CONTROL_HEADER). The key comes
from triton.modelControl.secretName, or from the Secret the chart creates. Give the env var
only to Triton and the retrain job: never to the worker, which handles hostile input.
*/}}
{{- define "guardstream.modelControlSecretName" -}}
{{- default (printf "%s-model-control" (include "guardstream.fullname" .)) .Values.triton.modelControl.secretName }}
{{- end }}

{{- define "guardstream.modelControlEnv" -}}
{{- if .Values.triton.modelControl.enabled -}}
- name: GUARDSTREAM_TRITON__MODEL_CONTROL_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "guardstream.modelControlSecretName" . }}
      key: {{ .Values.triton.modelControl.secretKey }}
{{- end }}
{{- end }}

{{/*
min.insync.replicas of the created topics: the value, else replicationFactor - 1; empty
with a replication factor of 1.
*/}}
{{- define "guardstream.minInsyncReplicas" -}}
{{- $t := .Values.kafka.topics }}
{{- if not (kindIs "invalid" $t.minInsyncReplicas) }}
{{- $t.minInsyncReplicas | int }}
{{- else if ge (int $t.replicationFactor) 2 }}
{{- sub (int $t.replicationFactor) 1 }}
{{- end }}
{{- end }}

{{/*
Pod-level security context shared by every pod: non-root, fixed uid/gid, RuntimeDefault seccomp.
*/}}
{{- define "guardstream.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container-level security context shared by every container.
*/}}
{{- define "guardstream.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Pod spec fields shared by every pod.
*/}}
{{- define "guardstream.podCommon" -}}
serviceAccountName: {{ include "guardstream.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "guardstream.podSecurityContext" . | nindent 2 }}
{{- end }}

{{/*
True when the Kafka protocol uses SASL / TLS.
*/}}
{{- define "guardstream.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "guardstream.kafkaTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/*
Environment of every guardstream container: settings come from the ConfigMap (envFrom);
SASL credentials only ever from the named Secret.
*/}}
{{- define "guardstream.appEnvFrom" -}}
- configMapRef:
    name: {{ include "guardstream.fullname" . }}-config
{{- end }}

{{- define "guardstream.appEnv" -}}
- name: HOME
  value: /tmp
{{- if include "guardstream.kafkaSasl" . }}
- name: GUARDSTREAM_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.secretName }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: GUARDSTREAM_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.secretName }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Kafka TLS files: the Secret mounted read-only; paths are set in the ConfigMap. Include
only when "guardstream.kafkaTls" is true.
*/}}
{{- define "guardstream.kafkaTlsVolume" -}}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.secretName }}
    defaultMode: 0440
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: ca.crt
      {{- if .Values.kafka.tls.certKey }}
      - key: {{ .Values.kafka.tls.certKey }}
        path: tls.crt
      - key: {{ .Values.kafka.tls.keyKey }}
        path: tls.key
      {{- end }}
{{- end }}

{{- define "guardstream.kafkaTlsVolumeMount" -}}
- name: kafka-tls
  mountPath: /etc/guardstream/kafka-tls
  readOnly: true
{{- end }}

{{/*
Checks no JSON schema can express; rendering fails with a clear message.
*/}}
{{- define "guardstream.validate" -}}
{{- $partitions := int .Values.kafka.topics.partitions }}
{{- $app := .Values.streamApp }}
{{- if $app.autoscaling.enabled }}
{{- if gt (int $app.autoscaling.maxReplicas) $partitions }}
{{- fail (printf "streamApp.autoscaling.maxReplicas (%d) must not exceed kafka.topics.partitions (%d): replicas beyond the input topic's partitions get no partition and sit idle" (int $app.autoscaling.maxReplicas) $partitions) }}
{{- end }}
{{- if gt (int $app.autoscaling.minReplicas) (int $app.autoscaling.maxReplicas) }}
{{- fail (printf "streamApp.autoscaling.minReplicas (%d) must not exceed streamApp.autoscaling.maxReplicas (%d)" (int $app.autoscaling.minReplicas) (int $app.autoscaling.maxReplicas)) }}
{{- end }}
{{- else if gt (int $app.replicas) $partitions }}
{{- fail (printf "streamApp.replicas (%d) must not exceed kafka.topics.partitions (%d): replicas beyond the input topic's partitions get no partition and sit idle" (int $app.replicas) $partitions) }}
{{- end }}
{{- if and (include "guardstream.kafkaSasl" .) (not .Values.kafka.sasl.secretName) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.secretName: the name of an existing Secret with the SASL user name and password" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and (include "guardstream.kafkaTls" .) (not .Values.kafka.tls.secretName) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.tls.secretName: the name of an existing Secret with the CA bundle" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if ne (empty .Values.kafka.tls.certKey) (empty .Values.kafka.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together: set both for mutual TLS, or neither" }}
{{- end }}
{{- $topics := .Values.kafka.topics }}
{{- if and (not (kindIs "invalid" $topics.minInsyncReplicas)) (gt (int $topics.minInsyncReplicas) (int $topics.replicationFactor)) }}
{{- fail (printf "kafka.topics.minInsyncReplicas (%d) must not exceed kafka.topics.replicationFactor (%d): no write could ever be acknowledged" (int $topics.minInsyncReplicas) (int $topics.replicationFactor)) }}
{{- end }}
{{- if gt (float64 .Values.policy.reviewBandLow) (float64 .Values.policy.reviewBandHigh) }}
{{- fail "policy.reviewBandLow must not exceed policy.reviewBandHigh" }}
{{- end }}
{{- if eq .Values.modelRepository.type "objectStore" }}
{{- if not .Values.modelRepository.objectStore.url }}
{{- fail "modelRepository.type objectStore needs modelRepository.objectStore.url (e.g. s3://bucket/models)" }}
{{- end }}
{{- if .Values.retrain.enabled }}
{{- fail "retrain.enabled needs modelRepository.type pvc: the retrain job writes new model versions onto the shared claim (set retrain.enabled=false with an object-store repository)" }}
{{- end }}
{{- else if and (not .Values.modelRepository.pvc.create) (not .Values.modelRepository.pvc.existingClaim) }}
{{- fail "modelRepository.pvc.create=false needs modelRepository.pvc.existingClaim" }}
{{- end }}
{{- end }}

{{/*
Settings of every guardstream process as a YAML map of env var -> string (prefix
GUARDSTREAM_, groups nested with "__"). Rendered into the ConfigMap, and inline into the
topics hook Job, which runs before the ConfigMap exists. Never credentials: the SASL user
and password come from kafka.sasl.secretName.
*/}}
{{- define "guardstream.settings" -}}
GUARDSTREAM_LOG_LEVEL: {{ .Values.logLevel | quote }}
GUARDSTREAM_KAFKA__BROKERS: {{ .Values.kafka.brokers | quote }}
GUARDSTREAM_KAFKA__SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "guardstream.kafkaSasl" . }}
GUARDSTREAM_KAFKA__SASL_MECHANISM: {{ .Values.kafka.sasl.mechanism | quote }}
{{- end }}
{{- if include "guardstream.kafkaTls" . }}
GUARDSTREAM_KAFKA__SSL_CAFILE: /etc/guardstream/kafka-tls/ca.crt  # files of kafka.tls.secretName
{{- if .Values.kafka.tls.certKey }}
GUARDSTREAM_KAFKA__SSL_CERTFILE: /etc/guardstream/kafka-tls/tls.crt
GUARDSTREAM_KAFKA__SSL_KEYFILE: /etc/guardstream/kafka-tls/tls.key
{{- end }}
{{- end }}
GUARDSTREAM_TOPICS__INPUT: {{ .Values.kafka.topics.input | quote }}
GUARDSTREAM_TOPICS__VERDICTS: {{ .Values.kafka.topics.verdicts | quote }}
GUARDSTREAM_TOPICS__FLAGGED: {{ .Values.kafka.topics.flagged | quote }}
GUARDSTREAM_TOPICS__DLQ: {{ .Values.kafka.topics.dlq | quote }}
GUARDSTREAM_TOPICS__REVIEWS: {{ .Values.kafka.topics.reviews | quote }}
GUARDSTREAM_TOPICS__REPLY_CHUNKS: {{ .Values.kafka.topics.replyChunks | quote }}
GUARDSTREAM_TOPICS__REPLY_VERDICTS: {{ .Values.kafka.topics.replyVerdicts | quote }}
GUARDSTREAM_TOPICS__PARTITIONS: {{ .Values.kafka.topics.partitions | int | quote }}
GUARDSTREAM_TOPICS__REPLICATION_FACTOR: {{ .Values.kafka.topics.replicationFactor | int | quote }}
{{- with include "guardstream.minInsyncReplicas" . }}
GUARDSTREAM_TOPICS__MIN_INSYNC_REPLICAS: {{ . | quote }}
{{- end }}
GUARDSTREAM_WORKER__BATCH_SIZE: {{ .Values.worker.batchSize | int | quote }}
GUARDSTREAM_STREAMS__WINDOW_TOKENS: {{ .Values.streams.windowTokens | int | quote }}
GUARDSTREAM_STREAMS__OVERLAP_TOKENS: {{ .Values.streams.overlapTokens | int | quote }}
GUARDSTREAM_STREAMS__RELEASE_LAG_WINDOWS: {{ .Values.streams.releaseLagWindows | int | quote }}
GUARDSTREAM_STREAMS__IDLE_S: {{ .Values.streams.idleS | toString | quote }}
GUARDSTREAM_STREAMS__MAX_STREAMS: {{ .Values.streams.maxStreams | int | quote }}
GUARDSTREAM_WORKER__BATCH_WINDOW_S: {{ .Values.worker.batchWindowS | toString | quote }}
GUARDSTREAM_WORKER__MAX_IN_FLIGHT: {{ .Values.worker.maxInFlight | int | quote }}
GUARDSTREAM_WORKER__MAX_CONTENT_BYTES: {{ .Values.worker.maxContentBytes | int | quote }}
GUARDSTREAM_WORKER__WEB_HOST: "0.0.0.0"  # reachable by the kubelet probes and Prometheus
GUARDSTREAM_WORKER__WEB_PORT: {{ .Values.streamApp.webPort | int | quote }}
GUARDSTREAM_WORKER__DATA_DIR: /var/lib/guardstream
GUARDSTREAM_TRITON__URL: {{ include "guardstream.tritonGrpcAddress" . | quote }}
GUARDSTREAM_TRITON__MODEL_NAME: {{ .Values.triton.modelName | quote }}
{{ include "guardstream.policySettings" . }}
GUARDSTREAM_POLICY__REVIEW_BAND_LOW: {{ .Values.policy.reviewBandLow | toString | quote }}
GUARDSTREAM_POLICY__REVIEW_BAND_HIGH: {{ .Values.policy.reviewBandHigh | toString | quote }}
GUARDSTREAM_POLICY__AUDIT_RATE: {{ .Values.policy.auditRate | toString | quote }}
{{- end }}

{{/*
The policy settings the served model reads (GUARDSTREAM_POLICY__*, without the review
band, which only the stream app reads): part of the settings above, and the whole of
Triton's own ConfigMap, so that nothing else rolls or can break the model.
*/}}
{{- define "guardstream.policySettings" -}}
{{- if not (kindIs "invalid" .Values.policy.threshold) }}
GUARDSTREAM_POLICY__THRESHOLD: {{ .Values.policy.threshold | toString | quote }}
{{- end }}
{{- with .Values.policy.defaultPolicyId }}
GUARDSTREAM_POLICY__DEFAULT_POLICY_ID: {{ . | quote }}
{{- end }}
{{- with .Values.policy.promptFormat }}
GUARDSTREAM_POLICY__PROMPT_FORMAT: {{ . | quote }}
{{- end }}
{{- if .Values.policy.custom }}
GUARDSTREAM_POLICY__POLICY_DIR: /etc/guardstream/policies  # the policies ConfigMap
{{- end }}
{{- end }}

{{/*
Custom policies (policy.custom): the ConfigMap volume and where it is mounted.
*/}}
{{- define "guardstream.policiesVolume" -}}
- name: policies
  configMap:
    name: {{ include "guardstream.fullname" . }}-policies
{{- end }}

{{- define "guardstream.policiesVolumeMount" -}}
- name: policies
  mountPath: /etc/guardstream/policies
  readOnly: true
{{- end }}
