{{/* Labels every object of the release carries. */}}
{{- define "ctflow.labels" -}}
app.kubernetes.io/part-of: ctflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "ctflow.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* The database URI from the installer's Secret. */}}
{{- define "ctflow.databaseEnv" -}}
- name: CTFLOW_BACKEND_STORE_URI
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- end }}

{{/* Settings shared by every service, and the object-store credentials if any. */}}
{{- define "ctflow.envFrom" -}}
- configMapRef:
    name: {{ .Release.Name }}-settings
{{- if .Values.artifacts.existingSecret }}
- secretRef:
    name: {{ .Values.artifacts.existingSecret }}
{{- end }}
{{- end }}

{{/* The API token workers and serving pods sign in with, on a server with auth. */}}
{{- define "ctflow.clientAuthEnv" -}}
{{- if and .Values.auth.enabled .Values.auth.clientTokenSecret }}
- name: MLFLOW_TRACKING_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.auth.clientTokenSecret }}
      key: token
{{- end }}
{{- end }}
