#!/usr/bin/env bash
# Run the device client inside an emulated Raspberry Pi OS userland (Debian bookworm arm64, Python 3.11,
# qemu user-mode emulation as a Cortex-A72, i.e. a Raspberry Pi 4) and check that it predicts exactly what
# it predicts on this host. For correctness only: emulation is ~65-90x slower than native; never time it.
#
#   sudo scripts/pi_check.sh [--bundle models/tflite] [--task qnli] [--input FILE] [--rows 100]
#                            [--root /var/tmp/spartan-pi] [--threads 2] [--tolerance T]
#
# Needs root (apt-get, debootstrap, mount, chroot) and network access to the Debian mirror and PyPI.
# Steps (each skipped when already done): install qemu-user-static, binfmt-support and debootstrap;
# enable the aarch64 binfmt handler; debootstrap a minimal bookworm arm64 root with python3; install the
# aarch64 wheels of device/requirements.txt into it from outside (pip --platform); copy device/, the
# bundle and the first --rows rows of --input in; run the client in the chroot and on the host; compare.
# Exit code 0 when every prediction matches: the same label for every row, and logits within --tolerance
# (default 1e-4 for float32/float16 weights; 0.05 for int8, whose activations are quantized at run time by
# different kernels on ARM and x86, so the last digits differ).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$repo/models/tflite"
task=qnli
input=""
rows=100
root=/var/tmp/spartan-pi
threads=2
tolerance=""  # default: 1e-4 for float32/float16 weights, 0.05 for int8 (see below)
mirror=http://deb.debian.org/debian
host_python="$repo/.venv/bin/python"
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) bundle="$2"; shift 2 ;;
    --task) task="$2"; shift 2 ;;
    --input) input="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --tolerance) tolerance="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (apt-get, debootstrap, mount and chroot need it)"
[ -f "$bundle/manifest.json" ] || die "--bundle $bundle: no manifest.json (convert a model first: python convert/to_tflite.py)"
[ -x "$host_python" ] || die "$host_python missing: run scripts/setup_venv.sh first"
if [ -z "$tolerance" ]; then
  weights="$("$host_python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["backbone"]["weights"])' "$bundle/manifest.json")"
  case "$weights" in int8) tolerance=0.05 ;; *) tolerance=1e-4 ;; esac
fi
if [ -z "$input" ]; then
  case "$task" in
    qnli) input="$repo/../shared/data/glue/QNLI/dev.tsv"; [ -f "$input" ] || input="$repo/samples/glue/QNLI/dev.tsv" ;;
    sst2) input="$repo/samples/glue/SST-2/dev.tsv" ;;
    *) die "--input is needed for task $task" ;;
  esac
fi
[ -f "$input" ] || die "--input $input: no such file"

# ---- 1. tools and the binfmt handler
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  say "mount binfmt_misc"
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || die "the qemu-aarch64 binfmt handler is not enabled (update-binfmts --enable qemu-aarch64)"

# ---- 2. the Raspberry Pi OS userland: Debian bookworm arm64 with Python 3.11
if [ ! -x "$root/usr/bin/python3" ]; then
  say "debootstrap bookworm arm64 into $root (a few minutes)"
  rm -rf "$root"
  debootstrap --arch=arm64 --variant=minbase --include=python3 bookworm "$root" "$mirror" >/dev/null
fi
site="$root/opt/spartan/site"
want="$(sha256sum "$repo/device/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$site/.requirements" 2>/dev/null)" != "$want" ]; then
  say "pip: aarch64 wheels of device/requirements.txt -> $site"
  rm -rf "$site"
  "$host_python" -m pip install --quiet --target "$site" --platform manylinux2014_aarch64 \
    --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_34_aarch64 --python-version 3.11 --implementation cp --only-binary=:all: \
    -r "$repo/device/requirements.txt" 2>"$root/pip.log" || { cat "$root/pip.log" >&2; die "pip failed"; }
  echo "$want" > "$site/.requirements"
fi

# ---- 3. the client, the bundle and the input
work="$root/opt/spartan"
rm -rf "$work/device" "$work/bundle"
mkdir -p "$work"
cp -r "$repo/device" "$work/device"
find "$work/device" -name __pycache__ -prune -exec rm -rf {} +
cp -r "$bundle" "$work/bundle"
ext="${input##*.}"
rm -f "$work"/input.*
case "$ext" in
  tsv) head -n "$((rows + 1))" "$input" > "$work/input.tsv" ;;  # the header and the first rows
  *) head -n "$rows" "$input" > "$work/input.$ext" ;;
esac
# A Raspberry Pi 4's /proc/cpuinfo (4 x Cortex-A72): ai-edge-litert reads it to pick its ARM kernels.
{
  for cpu in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$cpu"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
  done
  printf 'Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n'
} > "$work/cpuinfo"

# ---- 4. run in the emulated userland
mounted=()
cleanup() { for ((i=${#mounted[@]}-1; i>=0; i--)); do umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" || true; done; }
trap cleanup EXIT
mount -t proc proc "$root/proc"; mounted+=("$root/proc")
mount --bind "$work/cpuinfo" "$root/proc/cpuinfo"; mounted+=("$root/proc/cpuinfo")
mount --bind /dev "$root/dev"; mounted+=("$root/dev")
chroot_bin="$(command -v chroot)"
in_pi() {
  env -i QEMU_CPU=cortex-a72 HOME=/root LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin \
    PYTHONPATH=/opt/spartan/site "$chroot_bin" "$root" "$@"
}
say "emulated userland"
in_pi /bin/sh -c '. /etc/os-release; echo "os: $PRETTY_NAME"; echo "machine: $(uname -m)"'
cat > "$work/probe.py" <<'EOF'
import platform, sys
from importlib.metadata import version
sys.path.insert(0, "/opt/spartan/device")
from spartan_device.runtime import choose_runtime
print(f"python {platform.python_version()} ({platform.machine()}); numpy {version('numpy')}, "
      f"tokenizers {version('tokenizers')}; runtime {choose_runtime()}")
EOF
in_pi python3 /opt/spartan/probe.py
say "client in the emulated Pi: $rows rows of $(basename "$input"), task $task, $threads thread(s)"
start=$(date +%s)
in_pi python3 /opt/spartan/device/infer.py --bundle /opt/spartan/bundle --task "$task" \
  --input "/opt/spartan/input.$ext" --output /opt/spartan/pi.jsonl --force --threads "$threads" --verbose
echo "(emulated run took $(( $(date +%s) - start )) s; emulation timings mean nothing for a real Pi)"
cleanup; mounted=()

# ---- 5. the same on this host, and the comparison
say "client on this host ($(uname -m))"
"$host_python" "$repo/device/infer.py" --bundle "$bundle" --task "$task" --input "$work/input.$ext" \
  --output "$work/host.jsonl" --force --threads "$threads"
say "compare"
"$host_python" - "$work/host.jsonl" "$work/pi.jsonl" "$tolerance" <<'EOF'
import json, sys
host = [json.loads(line) for line in open(sys.argv[1])]
pi = [json.loads(line) for line in open(sys.argv[2])]
tolerance = float(sys.argv[3])
assert [r["id"] for r in host] == [r["id"] for r in pi], "the two runs answered different rows"
same_label = sum(h["label"] == p["label"] for h, p in zip(host, pi))
diff = max(abs(a - b) for h, p in zip(host, pi) for a, b in zip(h["logits"], p["logits"]))
print(f"rows: {len(host)}; same label: {same_label}/{len(host)}; max |logit difference|: {diff:.2e} "
      f"(tolerance {tolerance:g})")
for h, p in zip(host, pi):
    if h["label"] != p["label"]:
        margin = abs(h["logits"][0] - h["logits"][1]) if len(h["logits"]) == 2 else float("nan")
        print(f"  id {h['id']}: host {h['label']} (logit margin {margin:.3f}), emulated Pi {p['label']}")
ok = same_label == len(host) and diff <= tolerance
print("PASS: the emulated Raspberry Pi predicts what this host predicts" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
