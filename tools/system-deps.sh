#!/usr/bin/env bash
# Installs what the tests need from Debian, only when it is missing: for the
# QuPath conformance tests a Java runtime and compiler, Groovy and JTS
# (libjts-java); for the metrics tests a real Prometheus (prometheus); and
# Chromium, in which the concept atlas page is opened headless.
set -euo pipefail
missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v groovy >/dev/null 2>&1 || missing+=(groovy)
ls /usr/share/java/jts-core*.jar >/dev/null 2>&1 || missing+=(libjts-java)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: the QuPath, metrics and atlas tests need ${missing[*]} (Debian names);" >&2
  echo "system-deps: this machine has no apt-get, so install a JDK, Groovy, JTS," >&2
  echo "system-deps: Prometheus and Chromium yourself" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
