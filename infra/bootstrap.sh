#!/bin/bash
# orch instance bootstrap: EC2 user data, run once as root at first boot.
#
# `orch launch` sends this file as user data with the job's settings exported after the shebang
# (ORCH_JOB, ORCH_AUTOSTOP_MINUTES, ORCH_MAX_HOURS, ORCH_MAX_DOLLARS, ORCH_PRICE_PER_HOUR,
# ORCH_CHECKPOINT_BUCKET, ORCH_REGION). It never holds credentials: anything that touches AWS
# from the instance (s3 copies) uses the instance profile (infra/instance-role-policy.json).
#
# What it does, each step safe to repeat:
#   1. Docker running, the SSH user in the docker group (the Deep Learning AMI ships both).
#   2. The NVIDIA container runtime registered with Docker when the machine has a GPU.
#   3. The fast local NVMe disk (instance store), if any, at /mnt/orch for datasets and outputs
#      (orch puts jobs there when it exists, else in ~/orch on the EBS volume; a job launched
#      with --keep-volume keeps its outputs in ~/orch on the EBS volume, which outlives the instance).
#   4. A watcher service (`bootstrap.sh watch`) that, independent of the laptop:
#        - shuts the instance down ORCH_AUTOSTOP_MINUTES after the last orch container exited
#          (the instance is launched with shutdown behaviour "terminate", so it is then gone);
#        - shuts it down too when no orch container ever ran and no SSH connection was open for
#          ORCH_IDLE_MINUTES (default: 2 x autostop, 10 to 120 minutes; off with autostop 0): a sync
#          cut short, a laptop asleep, a Ctrl-C leave nobody to come back;
#        - stops the job (SIGTERM: the trainer saves last.pt) and the instance at the hard cap,
#          ORCH_MAX_HOURS or ORCH_MAX_DOLLARS / ORCH_PRICE_PER_HOUR hours after the watcher first
#          started (the time is kept in the state dir: a restart or a reboot does not reset it).
#          It writes the cap and its clock there ($STATE_DIR/cap, $STATE_DIR/started, in seconds),
#          and orch reads them (orchestrator/machines/bootstrap.py) when it starts a container, to give the trainer
#          `--max-hours` for what is left of the cap less a margin: the trainer then saves and exits 0
#          before this stop, and its projection warns when the run won't fit. The stop stays the
#          backstop (a trainer image of your own may ignore the flag);
#        - copies each new last.pt/best.pt (+ .sha256) to ORCH_CHECKPOINT_BUCKET;
#        - for a managed job (ORCH_MANAGED_GROUP, its Auto Scaling group), sets the group to 0 instances before
#          any shutdown of its own, so that AWS replaces the instance only after a reclaim or a failure;
#          its cap counts from the launch (ORCH_CAP_FROM), not from this instance's start.
#   5. A managed job (ORCH_SPEC_URI): orch's package from the bucket, checked against ORCH_PACKAGE_SHA256,
#      installed in a venv, then `python -m orchestrator.lifecycle.self_start` as the SSH user starts the
#      job from its spec there (its data, image, newest checkpoint). `bootstrap.sh start` runs this step alone.
#
# The watcher runs anywhere Docker does, which is how the tests exercise it:
#   ORCH_AUTOSTOP_MINUTES=0.05 ORCH_WATCH_INTERVAL_S=1 ORCH_SHUTDOWN_CMD="touch /tmp/down" bash bootstrap.sh watch
#
# The other files here, once per account (replace the EXAMPLE-* bucket names first):
#   aws iam create-policy --policy-name orch --policy-document file://infra/iam-policy.json
#       (attach it to the user or role that runs `orch`; it can only change orch:job-tagged resources)
#   aws iam create-role --role-name orch-trainer --assume-role-policy-document file://infra/instance-role-trust.json
#   aws iam put-role-policy --role-name orch-trainer --policy-name s3 --policy-document file://infra/instance-role-policy.json
#   aws iam create-instance-profile --instance-profile-name orch-trainer
#   aws iam add-role-to-instance-profile --instance-profile-name orch-trainer --role-name orch-trainer
#       (then `orch launch --iam-instance-profile orch-trainer ...` for s3:// data and --checkpoint-bucket)
set -uo pipefail

ORCH_USER="${ORCH_USER:-ubuntu}"
ORCH_DIR="${ORCH_DIR:-/mnt/orch}"
STATE_DIR="${ORCH_STATE_DIR:-/var/lib/orch}"
LOG="${ORCH_LOG:-/var/log/orch-bootstrap.log}"

log() { echo "$(date -u +%FT%TZ) orch: $*" | tee -a "$LOG" >&2; }

# Seconds from a (possibly fractional) number of minutes or hours; empty or 0 means "off".
seconds() { awk -v v="${1:-0}" -v m="$2" 'BEGIN { s = v * m; if (s < 0) s = 0; printf "%d", s }'; }

# -- 1. Docker ---------------------------------------------------------------------------------------
setup_docker() {
    if ! command -v docker >/dev/null 2>&1; then
        log "installing docker.io"
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
    fi
    systemctl enable --now docker
    id "$ORCH_USER" >/dev/null 2>&1 && usermod -aG docker "$ORCH_USER"
}

# -- 2. GPUs -----------------------------------------------------------------------------------------
setup_gpu_runtime() {
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
        log "no working NVIDIA driver: the container runs without GPUs"
        return 0
    fi
    if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
        log "NVIDIA container runtime present: $(nvidia-smi -L | tr '\n' ' ')"
        return 0
    fi
    if command -v nvidia-ctk >/dev/null 2>&1; then
        nvidia-ctk runtime configure --runtime=docker && systemctl restart docker
        log "registered the NVIDIA runtime with Docker"
    else
        log "WARNING: GPU present but no nvidia-container-toolkit; training would run on the CPU"
    fi
}

# -- 3. Fast local disk ------------------------------------------------------------------------------
setup_fast_disk() {
    mkdir -p "$(dirname "$ORCH_DIR")"
    if [ -e "$ORCH_DIR" ]; then return 0; fi
    # The Deep Learning AMIs already mount the instance store here.
    if mountpoint -q /opt/dlami/nvme 2>/dev/null; then
        mkdir -p /opt/dlami/nvme/orch && ln -s /opt/dlami/nvme/orch "$ORCH_DIR"
    else
        local dev
        dev=$(lsblk -dpno NAME,MODEL 2>/dev/null | awk '/Instance Storage/ {print $1; exit}')
        if [ -n "$dev" ] && ! lsblk -no MOUNTPOINT "$dev" | grep -q .; then
            log "formatting instance store $dev for $ORCH_DIR"
            mkfs.ext4 -q -F -E nodiscard -m 0 "$dev" && mkdir -p "$ORCH_DIR" \
                && mount -o noatime "$dev" "$ORCH_DIR"
        fi
    fi
    if [ -e "$ORCH_DIR" ]; then
        chown "$ORCH_USER:" "$ORCH_DIR/" 2>/dev/null
        log "fast disk for jobs: $ORCH_DIR ($(df -h --output=size "$ORCH_DIR/" | tail -1 | tr -d ' '))"
    else
        log "no instance store: jobs go to ~$ORCH_USER/orch on the EBS volume"
    fi
}

# -- 4. The watcher ------------------------------------------------------------------------------------
active_jobs() {  # orch containers that are running or about to be (restart policy)
    { docker ps -q --filter label=orch.job --filter status=running
      docker ps -q --filter label=orch.job --filter status=restarting
      docker ps -q --filter label=orch.job --filter status=created; } 2>/dev/null | wc -l
}

matches() {  # the file's SHA-256 is the one in $STATE_DIR/copying.sha256
    [ "$(sha256sum < "$1" | cut -d' ' -f1)" = "$(cut -d' ' -f1 < "$STATE_DIR/copying.sha256")" ]
}

copy_checkpoints() {  # new checkpoints to the bucket: the file, with last.pt the metrics (the history a resume
    [ -n "${ORCH_CHECKPOINT_BUCKET:-}" ] || return 0  # shows), then its .sha256, which a restore checks: it comes last
    local id outputs job name to
    for id in $(docker ps -aq --filter label=orch.job 2>/dev/null); do
        outputs=$(docker inspect -f '{{index .Config.Labels "orch.outputs"}}' "$id")
        job=$(docker inspect -f '{{index .Config.Labels "orch.job"}}' "$id")
        for name in last.pt best.pt; do
            local f="$outputs/checkpoints/$name" stamp="$STATE_DIR/copied-$job-$name"
            to="${ORCH_CHECKPOINT_BUCKET%/}/$job"
            [ -f "$f" ] && [ -f "$f.sha256" ] || continue
            [ -f "$stamp" ] && [ ! "$f.sha256" -nt "$stamp" ] && continue
            # Its .sha256 as it is now, and the file checked against it before and after the copy: a checkpoint
            # written meanwhile is copied on the next round, never paired with another one's .sha256.
            cp -p "$f.sha256" "$STATE_DIR/copying.sha256" && matches "$f" || continue
            # The digest rides on the object too (one PUT): a reclaim before the .sha256 is copied leaves a
            # checkpoint that a restore still verifies (orchestrator/job/restore.py reads it on a mismatch).
            aws s3 cp --only-show-errors --metadata "sha256=$(cut -d' ' -f1 "$STATE_DIR/copying.sha256")" \
                "$f" "$to/$name" && matches "$f" \
                && { [ "$name" != last.pt ] || [ ! -f "$outputs/metrics.jsonl" ] \
                     || aws s3 cp --only-show-errors "$outputs/metrics.jsonl" "$to/metrics.jsonl"; } \
                && aws s3 cp --only-show-errors "$STATE_DIR/copying.sha256" "$to/$name.sha256" \
                && touch -r "$STATE_DIR/copying.sha256" "$stamp" && log "copied $job/$name to $ORCH_CHECKPOINT_BUCKET"
        done
    done
}

ssh_sessions() {  # established SSH connections to this machine (orch's sync and logs, a user's shell)
    local out
    out=$(ss -Htn state established '( sport = :22 )' 2>/dev/null) || { echo 1; return 0; }  # can't tell: keep it
    printf '%s' "$out" | grep -c .
}

first_start() {  # the hard cap's clock: the watcher's first start (a managed job's launch), kept across reboots
    local file="$STATE_DIR/started" t
    t=$(cat "$file" 2>/dev/null)
    case "${ORCH_CAP_FROM:-}" in ''|*[!0-9]*) ;; *) [ "$t" = "$ORCH_CAP_FROM" ] || t="" ;; esac
    case "$t" in  # a managed job's clock counts across its replacements: from its launch
        ''|*[!0-9]*) t=${ORCH_CAP_FROM:-$(date +%s)}; case "$t" in *[!0-9]*) t=$(date +%s) ;; esac
                     echo "$t" > "$file.tmp" && mv "$file.tmp" "$file" ;;
    esac
    echo "$t"
}

stop_replacing() {  # a managed job (issue 24) that ends on purpose: its Auto Scaling group must not replace this
    [ -n "${ORCH_MANAGED_GROUP:-}" ] || return 0
    local try
    for try in 1 2 3; do
        if aws autoscaling set-desired-capacity --auto-scaling-group-name "$ORCH_MANAGED_GROUP" \
                --desired-capacity 0 --no-honor-cooldown; then
            log "group $ORCH_MANAGED_GROUP set to 0 instances: this one is not replaced"
            return 0
        fi
        sleep $((try * 5))
    done
    log "could not set group $ORCH_MANAGED_GROUP to 0 instances (the instance role needs" \
        "autoscaling:SetDesiredCapacity, infra/instance-role-policy.json): AWS will start a replacement"
}

power_off() {  # on purpose: the cap, the job's end, nobody coming (never a reclaim: AWS ends those itself)
    log "$1: shutting down"
    copy_checkpoints
    stop_replacing
    ${ORCH_SHUTDOWN_CMD:-shutdown -h now}
    exit 0
}

watch() {
    mkdir -p "$STATE_DIR"
    local interval="${ORCH_WATCH_INTERVAL_S:-60}" autostop cap idle idle_since="" unused_since=""
    autostop=$(seconds "${ORCH_AUTOSTOP_MINUTES:-30}" 60)
    if [ -n "${ORCH_IDLE_MINUTES:-}" ]; then
        idle=$(seconds "$ORCH_IDLE_MINUTES" 60)
    else  # orchestrator/lifecycle/userdata.py: idle_minutes() says the same to the user
        idle=$((2 * autostop))
        if [ "$idle" -gt 0 ] && [ "$idle" -lt 600 ]; then idle=600; fi
        if [ "$idle" -gt 7200 ]; then idle=7200; fi
    fi
    cap=$(seconds "${ORCH_MAX_HOURS:-0}" 3600)
    if [ -n "${ORCH_MAX_DOLLARS:-}" ] && [ -n "${ORCH_PRICE_PER_HOUR:-}" ]; then
        local by_price
        by_price=$(awk -v d="$ORCH_MAX_DOLLARS" -v p="$ORCH_PRICE_PER_HOUR" 'BEGIN { printf "%d", (p > 0 ? d / p * 3600 : 0) }')
        if [ "$by_price" -gt 0 ] && { [ "$cap" -eq 0 ] || [ "$by_price" -lt "$cap" ]; }; then cap=$by_price; fi
    fi
    local started; started=$(first_start)
    # What orch reads to tell the trainer the time it has (orchestrator/machines/bootstrap.py: hard_cap): not secret, readable.
    echo "$cap" > "$STATE_DIR/cap.tmp" && mv "$STATE_DIR/cap.tmp" "$STATE_DIR/cap"
    log "watcher: autostop ${autostop}s after the job ends (0: off), ${idle}s idle before any job (0: off)," \
        "hard cap ${cap}s from $(date -u -d "@$started" +%FT%TZ 2>/dev/null || echo "$started") (0: none)"
    while true; do
        local now active; now=$(date +%s); active=$(active_jobs)
        copy_checkpoints
        if [ "$cap" -gt 0 ] && [ $((now - started)) -ge "$cap" ]; then
            log "hard cap reached: stopping the job (the trainer saves last.pt)"
            docker ps -q --filter label=orch.job | xargs -r docker update --restart=no >/dev/null
            docker ps -q --filter label=orch.job | xargs -r docker stop --time 300 >/dev/null
            power_off "hard cap of ${cap}s reached"
        fi
        if [ "$active" -gt 0 ]; then
            touch "$STATE_DIR/job-seen"; idle_since=""
        elif [ -f "$STATE_DIR/job-seen" ]; then
            if [ "$autostop" -gt 0 ]; then
                idle_since="${idle_since:-$now}"
                if [ $((now - idle_since)) -ge "$autostop" ]; then
                    power_off "no orch container running for ${autostop}s"
                fi
            fi
        elif [ "$idle" -gt 0 ]; then
            # No job yet: the dataset may take hours to arrive, but over an SSH connection. With none
            # open either, nobody is coming back (a sync cut short, a laptop asleep): stop the billing.
            if [ "$(ssh_sessions)" -gt 0 ] || starting; then
                unused_since=""
            else
                unused_since="${unused_since:-$now}"
                if [ $((now - unused_since)) -ge "$idle" ]; then
                    power_off "no job started and no SSH connection for ${idle}s"
                fi
            fi
        fi
        sleep "$interval"
    done
}

install_watcher() {
    install -m 0755 "$0" /usr/local/sbin/orch-bootstrap
    {
        echo "ORCH_JOB=${ORCH_JOB:-}"; echo "ORCH_AUTOSTOP_MINUTES=${ORCH_AUTOSTOP_MINUTES:-30}"
        echo "ORCH_IDLE_MINUTES=${ORCH_IDLE_MINUTES:-}"
        echo "ORCH_MAX_HOURS=${ORCH_MAX_HOURS:-}"; echo "ORCH_MAX_DOLLARS=${ORCH_MAX_DOLLARS:-}"
        echo "ORCH_PRICE_PER_HOUR=${ORCH_PRICE_PER_HOUR:-}"; echo "ORCH_CHECKPOINT_BUCKET=${ORCH_CHECKPOINT_BUCKET:-}"
        echo "ORCH_MANAGED_GROUP=${ORCH_MANAGED_GROUP:-}"; echo "ORCH_CAP_FROM=${ORCH_CAP_FROM:-}"
        echo "AWS_DEFAULT_REGION=${ORCH_REGION:-}"
    } > /etc/orch-watch.env
    chmod 600 /etc/orch-watch.env
    cat > /etc/systemd/system/orch-watch.service <<'UNIT'
[Unit]
Description=orch: autostop, hard cap and checkpoint copies
After=docker.service
Requires=docker.service

[Service]
EnvironmentFile=/etc/orch-watch.env
ExecStart=/usr/local/sbin/orch-bootstrap watch
Restart=always
RestartSec=30

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now orch-watch.service
    log "watcher installed (orch-watch.service)"
}

# -- 5. A managed job: orch from the bucket, then the job from its spec in the bucket ----------------
as_user() {  # the SSH user runs the job, as over SSH (its home, its docker group)
    if [ "$(id -un)" = "$ORCH_USER" ]; then "$@"; return; fi
    runuser -u "$ORCH_USER" -- env HOME="$(getent passwd "$ORCH_USER" | cut -d: -f6)" "$@"
}

starting() {  # a start_job runs now: its pid, alive, written since this boot (a reboot leaves a stale file)
    local pid boot
    read -r pid boot < "$STATE_DIR/starting" 2>/dev/null || return 1
    [ "$boot" = "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)" ] && kill -0 "$pid" 2>/dev/null
}

start_job() {  # ORCH_SPEC_URI set: nothing comes from the laptop (orchestrator/lifecycle/self_start.py)
    [ -n "${ORCH_SPEC_URI:-}" ] || return 0
    mkdir -p "$STATE_DIR" && echo "$$ $(cat /proc/sys/kernel/random/boot_id 2>/dev/null)" > "$STATE_DIR/starting"
    start_from_bucket
    local rc=$?
    rm -f "$STATE_DIR/starting"
    return "$rc"
}

start_from_bucket() {
    local dir="${ORCH_PACKAGE_DIR:-/opt/orch}" python="${ORCH_PYTHON:-}" try rc
    mkdir -p "$dir" && rm -f "$dir/orch.tar.gz"
    aws s3 cp --only-show-errors "$ORCH_PACKAGE_URI" "$dir/orch.tar.gz"
    if ! echo "${ORCH_PACKAGE_SHA256:-none}  $dir/orch.tar.gz" | sha256sum -c --status 2>/dev/null; then
        log "$ORCH_PACKAGE_URI is missing or not the orch launched (sha256 ${ORCH_PACKAGE_SHA256:-?}): job not started"
        return 1
    fi
    rm -rf "$dir/src" && mkdir -p "$dir/src" \
        && tar -xzf "$dir/orch.tar.gz" -C "$dir/src" --no-same-owner --no-same-permissions \
        || { log "could not unpack $dir/orch.tar.gz: job not started"; return 1; }
    if [ -z "$python" ]; then  # a venv of orch and its dependencies (from PyPI: not pinned), once per instance
        python="$dir/venv/bin/python"
        { [ -x "$dir/venv/bin/pip" ] || python3 -m venv --clear "$dir/venv" \
            || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                    -o DPkg::Lock::Timeout=600 python3-venv \
                 && python3 -m venv --clear "$dir/venv"; }; } \
            && "$dir/venv/bin/pip" install -q "$dir/src" >> "$LOG" 2>&1 \
            || { log "could not install orch from $ORCH_PACKAGE_URI: job not started"; return 1; }
    fi
    chmod -R a+rX "$dir"
    for try in 1 2 3; do
        as_user env PYTHONPATH="$dir/src" ORCH_REGION="${ORCH_REGION:-}" AWS_DEFAULT_REGION="${ORCH_REGION:-}" \
            ORCH_SPEC_SHA256="${ORCH_SPEC_SHA256:-}" timeout "${ORCH_START_TIMEOUT_S:-14400}" \
            "$python" -m orchestrator.lifecycle.self_start "$ORCH_SPEC_URI" >> "$LOG" 2>&1
        rc=$?
        if [ "$rc" -eq 0 ]; then log "job ${ORCH_JOB:-?} started from $ORCH_SPEC_URI"; return 0; fi
        [ "$rc" -eq 2 ] && break  # its spec is refused: trying again changes nothing
        [ "$try" -lt 3 ] && sleep $((try * ${ORCH_RETRY_S:-20}))
    done
    log "job ${ORCH_JOB:-?} could not start from $ORCH_SPEC_URI (above): the watcher shuts this instance down when idle"
    return 1
}

case "${1:-boot}" in
    watch) watch ;;
    start) start_job ;;
    boot)
        log "bootstrap for job ${ORCH_JOB:-?}"
        setup_docker
        setup_gpu_runtime
        setup_fast_disk
        install_watcher
        log "bootstrap done"
        start_job
        ;;
    *) echo "usage: $0 [boot|watch|start]" >&2; exit 2 ;;
esac
