#!/usr/bin/env bash
# Show that the `edge` extra installs and classifies a file on aarch64 (Raspberry Pi OS 64-bit is Debian
# arm64), by running a Debian bookworm arm64 chroot under qemu-user emulation on an x86-64 machine.
# Speed under emulation says nothing about a real Pi; this checks installability and correctness only: the same
# command then runs on this machine, and the result compares the two, window by window (top label and the
# probabilities of the labels both list).
#
# Needs root, network access to deb.debian.org and PyPI, and apt packages qemu-user-static debootstrap.
# About 5-15 minutes for debootstrap and 2-8 for pip under emulation on a 2-core x86-64 machine.
# Usage: sudo bash benchmarks/aarch64_check.sh MODEL.onnx[+MODEL.onnx...] AUDIO_FILE_OR_FOLDER [CHROOT_DIR]
#   A+B: the models averaged on each window, as `edge.listen --model A B` runs them (the listener's default set).
# Writes benchmarks/results/aarch64.json (through edge.atomic) and prints the classification.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
IFS=+ read -ra parts <<< "$1"
models=(); for part in "${parts[@]}"; do models+=("$(realpath "$part")"); done
audio=$(realpath "$2"); root=${3:-${XDG_CACHE_HOME:-$HOME/.cache}/esc50-edge/arm64-chroot}
# the host's side runs with the project's venv (it needs the `edge` extra), else $PYTHON (sudo drops it: sudo PYTHON=...)
default_python=python3; [ -x "$repo/.venv/bin/python" ] && default_python="$repo/.venv/bin/python"
python=${PYTHON:-$default_python}
for model in "${models[@]}"; do [ -f "$model" ] || { echo "error: no such model file: $model" >&2; exit 2; }; done

if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then  # the package registers it under systemd only
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi

t0=$(date +%s)
mkdir -p "$root"
if [ ! -x "$root/usr/bin/python3" ]; then
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,libportaudio2,libsndfile1,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian
  echo $(( $(date +%s) - t0 )) > "$root/.debootstrap_s"  # kept for reruns that reuse the chroot
fi
t1=$(date +%s)
boot_s=$(cat "$root/.debootstrap_s" 2>/dev/null || echo null)

# No /sys in the chroot: with sysfs mounted, qemu-user 7.2 segfaulted twice during pip install. onnxruntime
# then prints "Error in cpuinfo: failed to parse the list of possible processors" and runs regardless.
mkdir -p "$root/proc" "$root/dev" "$root/check"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cleanup() { umount "$root/proc" "$root/dev" 2>/dev/null || true; rm -f "${out:-}" "${host_out:-}"; }
trap cleanup EXIT

rm -rf "$root/check/src" "$root/check/data" && mkdir -p "$root/check/src" "$root/check/data"  # nothing of an earlier check
# The package source only (no .venv, runs or data): pyproject.toml, README.md and the three packages.
tar -C "$repo" --exclude='__pycache__' -cf - pyproject.toml README.md edge train export | tar -C "$root/check/src" -xf -
chroot_models=()
for i in "${!models[@]}"; do
  cp "${models[$i]}" "$root/check/data/model$i.onnx" && chroot_models+=("/check/data/model$i.onnx")
done
if [ -d "$audio" ]; then cp -r "$audio" "$root/check/data/audio"; else cp "$audio" "$root/check/data/"; fi
audio_in=/check/data/$( [ -d "$audio" ] && echo audio || basename "$audio")

# Commands run in the chroot with a clean environment (the host's pip settings do not apply there).
# Behind a TLS-intercepting proxy pip needs the host's CA bundle (PIP_CERT or SSL_CERT_FILE on the host).
ca=${PIP_CERT:-${SSL_CERT_FILE:-}}
cert_env=()
if [ -n "$ca" ] && [ -f "$ca" ]; then
  cp "$ca" "$root/check/ca.crt"
  cert_env=(PIP_CERT=/check/ca.crt SSL_CERT_FILE=/check/ca.crt REQUESTS_CA_BUNDLE=/check/ca.crt)
fi
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "${cert_env[@]}" "$@"; }

in_root /bin/sh -c 'rm -rf /check/venv && python3 -m venv /check/venv && /check/venv/bin/pip install -q "/check/src[edge]"'
t2=$(date +%s)
out=$(mktemp)
in_root /check/venv/bin/python -m edge.listen --model "${chroot_models[@]}" --file "$audio_in" --json > "$out"
t3=$(date +%s)
cat "$out"
host_out=$(mktemp)  # the same command on this machine, to compare with
(cd "$repo" && "$python" -m edge.listen --model "${models[@]}" --file "$audio" --json > "$host_out")
arch=$(in_root uname -m)
versions=$(in_root /check/venv/bin/python -c 'import importlib.metadata as m, json, platform; print(json.dumps({"python": platform.python_version(), **{p: m.version(p) for p in ("numpy", "onnxruntime", "scipy", "sounddevice", "soundfile", "soxr")}}))')

cd "$repo" && "$python" - "$arch" "$versions" "$audio" "$boot_s" $((t2 - t1)) $((t3 - t2)) "$out" "$host_out" \
  "${models[@]}" <<'PY'
import hashlib, json, os, platform, sys
from edge.atomic import write_json
arch, versions, audio, boot_s, install_s, classify_s, out, host_out, *models = sys.argv[1:]
shown = lambda p: os.path.relpath(p) if not os.path.relpath(p).startswith("..") else os.path.basename(p)  # no host folders
model_sha256 = {shown(m): hashlib.sha256(open(m, "rb").read()).hexdigest() for m in models}  # which files were checked
windows = [json.loads(line) for line in open(out)]
host = [json.loads(line) for line in open(host_out)]
if [(os.path.basename(w["file"]), w["start_s"]) for w in windows] != [(os.path.basename(w["file"]), w["start_s"]) for w in host]:
    sys.exit("error: the two machines classified different windows")
labels, differences = {}, []
same_top = 0
for w, h in zip(windows, host):
    labels.setdefault(os.path.basename(w["file"]), []).append(w["label"])
    mine, theirs = w.get("top") or [], {t["label"]: t["probability"] for t in h.get("top") or []}
    differences += [abs(t["probability"] - theirs[t["label"]]) for t in mine if t["label"] in theirs]
    same_top += [t["label"] for t in mine[:1]] == [t["label"] for t in (h.get("top") or [])[:1]]
write_json({"what": "edge extra installed and --file classification run in a Debian bookworm arm64 chroot "
                    "under qemu-user-static (emulated; timings are not Raspberry Pi speed), compared with the same "
                    "command on " + platform.machine(),
            "uname_m": arch, "packages": json.loads(versions), "models": list(model_sha256), "model_sha256": model_sha256,
            "audio": shown(audio), "debootstrap_s": json.loads(boot_s), "pip_install_s": int(install_s),
            "classify_s_emulated": int(classify_s), "windows": len(windows),
            "same_top_label_as_" + platform.machine(): same_top,
            "max_probability_difference": round(max(differences, default=0.0), 4),
            "labels_per_file": labels}, "benchmarks/results/aarch64.json")
print(f"wrote benchmarks/results/aarch64.json: {same_top} of {len(windows)} windows have the same top label on "
      f"{arch} and {platform.machine()}; probabilities differ by at most {max(differences, default=0.0):.4f}")
PY
