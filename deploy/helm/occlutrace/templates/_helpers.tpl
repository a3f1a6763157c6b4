{{/* Names: the RayCluster gets the fullname, so its head Service is "<fullname>-head-svc". */}}
{{- define "occlutrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "occlutrace.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "occlutrace.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "occlutrace.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "occlutrace.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "occlutrace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: occlutrace
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "controller"). */}}
{{- define "occlutrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "occlutrace.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Not the fullname: KubeRay gives the head pod (autoscaler RBAC) an account named after the RayCluster. */}}
{{- define "occlutrace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-workload" (include "occlutrace.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image of a variant: include with (dict "ctx" $ "variant" "cpu"|"gpu"). */}}
{{- define "occlutrace.image" -}}
{{- $v := .ctx.Values.image -}}
{{- $suffix := ternary $v.gpuVariant $v.cpuVariant (eq .variant "gpu") -}}
{{- printf "%s:%s-%s" $v.repository (default .ctx.Chart.AppVersion $v.tag) $suffix -}}
{{- end -}}

{{- define "occlutrace.rayClusterName" -}}
{{- include "occlutrace.fullname" . -}}
{{- end -}}

{{- define "occlutrace.rayAddress" -}}
{{- printf "ray://%s-head-svc.%s.svc:10001" (include "occlutrace.rayClusterName" .) .Release.Namespace -}}
{{- end -}}

{{- define "occlutrace.minioName" -}}
{{- printf "%s-minio" (include "occlutrace.fullname" .) -}}
{{- end -}}

{{- define "occlutrace.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "http://%s.%s.svc:9000" (include "occlutrace.minioName" .) .Release.Namespace -}}
{{- else -}}
{{- required "store.external.endpoint is required when minio.enabled is false" .Values.store.external.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "occlutrace.storeUrl" -}}
{{- $prefix := trimAll "/" .Values.store.prefix -}}
{{- if $prefix -}}
{{- printf "s3://%s/%s" .Values.store.bucket $prefix -}}
{{- else -}}
{{- printf "s3://%s" .Values.store.bucket -}}
{{- end -}}
{{- end -}}

{{/* Secrets: an existing one named in values, else the one this chart writes. */}}
{{- define "occlutrace.s3SecretName" -}}
{{- if .Values.minio.enabled -}}
{{- default (printf "%s-s3" (include "occlutrace.fullname" .)) .Values.minio.existingSecret -}}
{{- else -}}
{{- default (printf "%s-s3" (include "occlutrace.fullname" .)) .Values.store.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "occlutrace.s3AccessKeyKey" -}}
{{- if .Values.minio.enabled -}}access-key{{- else -}}{{ .Values.store.external.accessKeyKey }}{{- end -}}
{{- end -}}

{{- define "occlutrace.s3SecretKeyKey" -}}
{{- if .Values.minio.enabled -}}secret-key{{- else -}}{{ .Values.store.external.secretKeyKey }}{{- end -}}
{{- end -}}

{{- define "occlutrace.tokensSecretName" -}}
{{- default (printf "%s-tokens" (include "occlutrace.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "occlutrace.signingSecretName" -}}
{{- default (printf "%s-signing" (include "occlutrace.fullname" .)) .Values.auth.signingExistingSecret -}}
{{- end -}}

{{- define "occlutrace.rayAuthSecretName" -}}
{{- default (printf "%s-ray-auth" (include "occlutrace.fullname" .)) .Values.ray.auth.existingSecret -}}
{{- end -}}

{{/*
A random value kept across upgrades: the key's current value in the live Secret when there is
one (helm install/upgrade), else a new one (first install; `helm template` always draws anew).
Include with (dict "ctx" $ "secret" NAME "key" KEY "length" N).
*/}}
{{- define "occlutrace.keptRandom" -}}
{{- $live := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $live (hasKey ($live.data | default dict) .key) -}}
{{- index $live.data .key -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the controller and every Ray container. */}}
{{- define "occlutrace.commonEnv" -}}
- name: HOME
  value: /tmp
{{- if .Values.ray.auth.enabled }}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN_PATH
  value: /etc/occlutrace/ray-auth/auth_token
{{- else }}
- name: RAY_AUTH_MODE
  value: disabled
{{- end }}
{{- end -}}

{{- define "occlutrace.rayAuthVolume" -}}
{{- if .Values.ray.auth.enabled -}}
- name: ray-auth
  secret:
    secretName: {{ include "occlutrace.rayAuthSecretName" . }}
    defaultMode: 0440
    items:
      - key: auth_token
        path: auth_token
{{- end }}
{{- end -}}

{{- define "occlutrace.rayAuthMount" -}}
{{- if .Values.ray.auth.enabled -}}
- name: ray-auth
  mountPath: /etc/occlutrace/ray-auth
  readOnly: true
{{- end }}
{{- end -}}

{{/* The enabled entries of ray.workerGroups, as a YAML list (fromYamlArray to use it). */}}
{{- define "occlutrace.enabledWorkerGroups" -}}
{{- $groups := list -}}
{{- range .Values.ray.workerGroups -}}
{{- if dig "enabled" true . -}}
{{- $groups = append $groups . -}}
{{- end -}}
{{- end -}}
{{- toYaml $groups -}}
{{- end -}}

{{/*
OCCLUTRACE_MAX_WORKERS: the most align workers the dispatcher runs (and asks the autoscaler
room for). controller.maxWorkers when set; else, with any GPU group, the GPUs of all GPU groups
at maxReplicas (one worker per GPU); else the CPUs of the CPU groups at maxReplicas plus the
head's (one CPU align worker per CPU, OCCLUTRACE_WORKER_CPUS=1). At least 1.
*/}}
{{- define "occlutrace.maxWorkers" -}}
{{- if .Values.controller.maxWorkers -}}
{{- int .Values.controller.maxWorkers -}}
{{- else -}}
{{- $gpus := 0 -}}
{{- $cpus := int .Values.ray.head.numCpus -}}
{{- range (include "occlutrace.enabledWorkerGroups" . | fromYamlArray) -}}
{{- $n := int (dig "gpus" 0 .) -}}
{{- if gt $n 0 -}}
{{- $gpus = add $gpus (mul (int .maxReplicas) $n) -}}
{{- else -}}
{{- $cpus = add $cpus (mul (int .maxReplicas) (int (dig "numCpus" "0" .))) -}}
{{- end -}}
{{- end -}}
{{- max 1 (ternary $gpus $cpus (gt $gpus 0)) -}}
{{- end -}}
{{- end -}}

{{/* Env names the chart sets on the controller (controller.extraEnv must not repeat them). */}}
{{- define "occlutrace.controllerEnvNames" -}}
HOME RAY_AUTH_MODE RAY_AUTH_TOKEN_PATH OCCLUTRACE_RAY_ADDRESS OCCLUTRACE_STORE OCCLUTRACE_S3_ENDPOINT OCCLUTRACE_S3_REGION OCCLUTRACE_S3_PUBLIC_ENDPOINT OCCLUTRACE_S3_ACCESS_KEY_FILE OCCLUTRACE_S3_SECRET_KEY_FILE OCCLUTRACE_TOKENS_FILE OCCLUTRACE_URL_SECRET_FILE OCCLUTRACE_CALLBACK_SECRET_FILE OCCLUTRACE_BATCH_SIZE OCCLUTRACE_CPU_WORKERS OCCLUTRACE_DEVICE_WORKER OCCLUTRACE_MAX_WORKERS OCCLUTRACE_MAX_ATTEMPTS OCCLUTRACE_MAX_UPLOAD_BYTES
{{- end -}}

{{/* The Secret and key the helm test pod reads its API token from. */}}
{{- define "occlutrace.helmTestSecretName" -}}
{{- default (printf "%s-helm-test" (include "occlutrace.fullname" .)) .Values.helmTest.existingSecret -}}
{{- end -}}

{{/* runbook_url of an alert: include with (dict "ctx" $ "alert" "OccluTraceQueueBacklog"). */}}
{{- define "occlutrace.runbookUrl" -}}
{{- printf "%s#%s" .ctx.Values.monitoring.prometheusRule.runbookBaseUrl (lower .alert) -}}
{{- end -}}
