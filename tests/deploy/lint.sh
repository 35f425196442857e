#!/usr/bin/env bash
# Validates the scale-out templates offline (issue 14, item 2), as CI runs it (.ci/run):
#   deploy/aws/*.yaml   cfn-lint (CloudFormation: resource types, properties, references)
#   deploy/k8s/*.yaml   kubernetes-validate --strict against Kubernetes K8S_VERSION (1.33, an EKS
#                       version), every resource of every file
# The validators come pinned from tests/deploy/requirements.txt into a venv under build/
# (DEPLOY_VENV, default build/deploy-venv; PyPI the first time only), and run without network
# when `unshare -n` works (root): their schemas are bundled. Also checks that each validator
# rejects a broken sample, so a validator that checks nothing cannot pass. Ends "N passed, M failed".
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$repo"
venv=${DEPLOY_VENV:-build/deploy-venv}
k8s=${K8S_VERSION:-1.33.0}
python=${PYTHON3:-python3}
passed=0 failed=0
report() { if [ "$1" = 0 ]; then passed=$((passed + 1)); echo "ok   - $2"; else failed=$((failed + 1)); echo "FAIL - $2"; fi; }

if ! cmp -s <("$venv/bin/pip" freeze 2>/dev/null) <(grep -v '^#' tests/deploy/requirements.txt); then
    rm -rf "$venv"
    "$python" -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check \
        -r tests/deploy/requirements.txt || { echo "FAIL - could not install tests/deploy/requirements.txt"; exit 1; }
fi
offline=()
if unshare -n true 2>/dev/null; then offline=(unshare -n); fi
echo "validators: $("$venv/bin/cfn-lint" --version), kubernetes-validate $("$venv/bin/kubernetes-validate" --version)" \
    "${offline:+(no network: unshare -n)}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for f in deploy/aws/*.yaml; do
    "${offline[@]}" "$venv/bin/cfn-lint" "$f"
    report $? "cfn-lint $f"
done
printf 'Resources:\n  X:\n    Type: AWS::EC2::LaunchTemplate\n    Properties:\n      LaunchTemplateData:\n        EnclaveOptions:\n          Enabled: maybe\n' >"$tmp/bad.yaml"
"${offline[@]}" "$venv/bin/cfn-lint" "$tmp/bad.yaml" >/dev/null 2>&1
[ $? != 0 ]
report $? "cfn-lint rejects a broken template"

for f in deploy/k8s/*.yaml; do
    "${offline[@]}" "$venv/bin/kubernetes-validate" -k "$k8s" --strict --quiet "$f"
    report $? "kubernetes-validate --strict ($k8s) $f"
done
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: two\n  selector: {}\n  template: {}\n' >"$tmp/bad.yaml"
"${offline[@]}" "$venv/bin/kubernetes-validate" -k "$k8s" --strict --quiet "$tmp/bad.yaml" >/dev/null 2>&1
[ $? != 0 ]
report $? "kubernetes-validate rejects a broken manifest"

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
