{{/* Names and labels. */}}
{{- define "bus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "bus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one role: call with (dict "root" $ "role" "inbound"). */}}
{{- define "bus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bus.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "bus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bus.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is given (immutable, what production should pin), else repository:tag. */}}
{{- define "bus.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The roles this release runs, as a list: ["all"] or the enabled ones of inbound, router, outbound. */}}
{{- define "bus.roles" -}}
{{- if eq .Values.mode "all-in-one" -}}
{{- list "all" | toJson -}}
{{- else -}}
{{- $roles := list -}}
{{- range $role := list "inbound" "router" "outbound" -}}
{{- if (index $.Values.roles $role).enabled -}}{{- $roles = append $roles $role -}}{{- end -}}
{{- end -}}
{{- $roles | toJson -}}
{{- end -}}
{{- end -}}

{{/* The hub config: the user's `config` with Kafka, registry and servers filled from values.
Credentials are never in it: ${file:...} reads them from Secrets mounted as files at start. */}}
{{- define "bus.hubConfig" -}}
{{- $c := deepCopy .Values.config -}}
{{- $kafka := merge (dict "bootstrap" .Values.kafka.bootstrap) (deepCopy (default dict $c.kafka)) -}}
{{- $tls := .Values.kafka.tls.enabled -}}
{{- $sasl := .Values.kafka.sasl.mechanism -}}
{{- if or $tls $sasl -}}
{{- $security := dict "protocol" (ternary (ternary "SASL_SSL" "SSL" (not (empty $sasl))) "SASL_PLAINTEXT" $tls) -}}
{{- if $tls -}}
{{- $_ := set $security "ssl_cafile" "/etc/bus-kafka-tls/ca.crt" -}}
{{- if .Values.kafka.tls.mutual -}}
{{- $_ := set $security "ssl_certfile" "/etc/bus-kafka-tls/tls.crt" -}}
{{- $_ := set $security "ssl_keyfile" "/etc/bus-kafka-tls/tls.key" -}}
{{- end -}}
{{- end -}}
{{- if $sasl -}}
{{- $_ := set $security "sasl_mechanism" $sasl -}}
{{- $secret := printf "${file:/etc/bus-secrets/kafka-sasl/%s}" .Values.kafka.sasl.passwordKey -}}
{{- if eq $sasl "OAUTHBEARER" -}}
{{- $o := .Values.kafka.sasl.oauth -}}
{{- $oauth := dict "token_url" $o.tokenUrl "client_id" $o.clientId "client_secret" $secret -}}
{{- if $o.scope }}{{- $_ := set $oauth "scope" $o.scope -}}{{- end -}}
{{- $_ := set $security "oauth" $oauth -}}
{{- else -}}
{{- $_ := set $security "sasl_username" (default (printf "${file:/etc/bus-secrets/kafka-sasl/%s}" .Values.kafka.sasl.usernameKey) .Values.kafka.sasl.username) -}}
{{- $_ := set $security "sasl_password" $secret -}}
{{- end -}}
{{- end -}}
{{- $_ := set $kafka "security" $security -}}
{{- end -}}
{{- $_ := set $c "kafka" $kafka -}}
{{- $registry := dict "url" .Values.schemaRegistry.url -}}
{{- if .Values.schemaRegistry.credentialsSecret -}}
{{- $_ := set $registry "username" "${file:/etc/bus-secrets/schema-registry/username}" -}}
{{- $_ := set $registry "password" "${file:/etc/bus-secrets/schema-registry/password}" -}}
{{- end -}}
{{- $_ := set $c "schema_registry" $registry -}}
{{- /* In a pod the servers listen on every interface (the NetworkPolicy decides who reaches them); the rest of config.http and config.ops (tokens, timeouts) is kept. */ -}}
{{- $_ := set $c "http" (merge (dict "host" "0.0.0.0" "port" .Values.ports.http) (deepCopy (default dict $c.http))) -}}
{{- $ops := merge (dict "host" "0.0.0.0" "port" .Values.ports.ops) (deepCopy (default dict $c.ops)) -}}
{{- if .Values.opsTokens.secretName -}}
{{- $tokens := default list $ops.tokens -}}
{{- range .Values.opsTokens.tokens -}}
{{- $tokens = append $tokens (dict "name" .name "token" (printf "${file:/etc/bus-secrets/ops-tokens/%s}" .key) "scope" (default "read" .scope)) -}}
{{- end -}}
{{- $_ := set $ops "tokens" $tokens -}}
{{- end -}}
{{- $_ := set $c "ops" $ops -}}
{{- toYaml $c -}}
{{- end -}}

{{/* Restricted pod and container security (Pod Security Standards "restricted"). */}}
{{- define "bus.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "bus.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The volumes every hub container mounts: its config, a /tmp, the secrets; shared by the roles'
Deployments and the migration Job. */}}
{{- define "bus.volumeMounts" -}}
- {name: config, mountPath: /etc/bus, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- if $.Values.kafka.tls.enabled }}
- {name: kafka-tls, mountPath: /etc/bus-kafka-tls, readOnly: true}
{{- end }}
{{- if $.Values.kafka.sasl.mechanism }}
- {name: kafka-sasl, mountPath: /etc/bus-secrets/kafka-sasl, readOnly: true}
{{- end }}
{{- if $.Values.schemaRegistry.credentialsSecret }}
- {name: schema-registry, mountPath: /etc/bus-secrets/schema-registry, readOnly: true}
{{- end }}
{{- range $.Values.secretMounts }}
- {name: {{ printf "secret-%s" .name | quote }}, mountPath: {{ printf "/etc/bus-secrets/%s" .name | quote }}, readOnly: true}
{{- end }}
{{- if $.Values.opsTokens.secretName }}
- {name: ops-tokens, mountPath: /etc/bus-secrets/ops-tokens, readOnly: true}
{{- end }}
{{- with $.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "bus.volumes" -}}
- name: config
  configMap: {name: {{ include "bus.fullname" $ }}-config}
{{ include "bus.secretVolumes" $ }}
{{- end }}

{{/* Every volume but the config: /tmp, Kafka's TLS files, the secrets, the user's extra volumes
(the validation hook mounts these beside its own copy of the config). */}}
{{- define "bus.secretVolumes" -}}
- name: tmp
  emptyDir: {sizeLimit: {{ $.Values.tmpSizeLimit | quote }}}
{{- $tls := $.Values.kafka.tls }}
{{- if $tls.enabled }}
- name: kafka-tls
  projected:
    # Whatever the keys are called in the Secrets (Strimzi: user.crt; cert-manager: tls.crt), the
    # hub finds ca.crt, tls.crt and tls.key.
    sources:
      - secret:
          name: {{ default $tls.secretName $tls.caSecretName | quote }}
          items: [{key: {{ $tls.caKey | quote }}, path: ca.crt}]
      {{- if $tls.mutual }}
      - secret:
          name: {{ $tls.secretName | quote }}
          items: [{key: {{ $tls.certKey | quote }}, path: tls.crt}, {key: {{ $tls.keyKey | quote }}, path: tls.key}]
      {{- end }}
{{- end }}
{{- if $.Values.kafka.sasl.mechanism }}
- name: kafka-sasl
  secret: {secretName: {{ $.Values.kafka.sasl.secretName | quote }}}
{{- end }}
{{- if $.Values.schemaRegistry.credentialsSecret }}
- name: schema-registry
  secret: {secretName: {{ $.Values.schemaRegistry.credentialsSecret | quote }}}
{{- end }}
{{- range $.Values.secretMounts }}
- name: {{ printf "secret-%s" .name | quote }}
  secret: {secretName: {{ .secretName | quote }}}
{{- end }}
{{- if $.Values.opsTokens.secretName }}
- name: ops-tokens
  secret: {secretName: {{ $.Values.opsTokens.secretName | quote }}}
{{- end }}
{{- with $.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The config checksum of one role's pods: the config without the sections only other roles
read (inbound adapters, routes, outbound adapters), plus the files beside it. Changing a route
rolls the router alone; an outbound's URL, the outbound role alone; kafka, all of them.
Call with (dict "root" $ "role" "router"). */}}
{{- define "bus.roleChecksum" -}}
{{- $c := include "bus.hubConfig" .root | fromYaml -}}
{{- $others := dict "all" (list) "inbound" (list "routes" "router" "tables" "outbound" "migrations") "router" (list "inbound" "outbound" "migrations") "outbound" (list "inbound" "routes" "router" "tables" "migrations") -}}
{{- range $section := index $others .role }}{{- $_ := unset $c $section }}{{- end -}}
{{- print (toJson $c) (toJson .root.Values.configFiles) | sha256sum -}}
{{- end -}}
