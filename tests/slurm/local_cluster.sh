#!/usr/bin/env bash
# A one-node SLURM cluster on localhost that runs the tiny CI configuration through the shipped
# profile, workflow/profiles/slurm, then shuts down, on success, failure or interruption alike.
#
#   apt-get install slurmctld slurmd slurm-client munge    # Debian's SLURM and MUNGE
#   pip install snakemake-executor-plugin-slurm==2.6.1
#   tests/slurm/local_cluster.sh [WORKDIR] [-- EXTRA SNAKEMAKE ARGUMENTS]
#
# The run happens in WORKDIR, a fresh copy of this checkout's files (tracked and untracked, not
# ignored, without the reference outputs under results/ and figures/), so nothing is written
# into the checkout. WORKDIR must not exist yet; it is kept, with the run's results, logs and
# the cluster's job record (logs/slurm_cluster/). Without WORKDIR a temporary one is used and
# removed at the end.
#
# The cluster lives in a temporary state folder: its own MUNGE key and daemon, its own
# slurm.conf (partitions `cpu`, the default, and `gpu`, as the profile expects), free ports.
# Commands find that slurm.conf through SLURM_CONF, except `srun` inside a job: the plugin's job
# step (snakemake-executor-plugin-slurm-jobstep 0.6.1) removes every SLURM_* variable from its
# environment. So, as on a node of a "configless" cluster, /run/slurm/conf links to the folder
# holding slurm.conf for the length of the run (hence root, and no /etc/slurm/slurm.conf on the
# machine). Nothing is left behind: the folder, that link and every daemon go at exit.
# There is no accounting database (slurmdbd): the executor plugin polls `squeue`, and the
# controller keeps finished jobs for an hour (MinJobAge) so that `squeue` still reports them.
# Every finished job is written to a plain job-completion record (jobcomp/filetxt), copied to
# WORKDIR/logs/slurm_cluster/jobcomp.txt, which tests/test_slurm.py reads.
#
# The node is sized for the workflow's requests, not for the machine: at least as many CPUs as
# the profile's `cores` (which caps a job's threads and a job group's cores) and at least
# 128000 MB, so that the largest bookings fit (training asks 16000 MB, a group of registrations
# several times 8000 MB, and a retry twice as much). SLURM books that memory but cannot enforce
# it here (no cgroups). REGBENCH_SLURM_CPUS and REGBENCH_SLURM_MEM_MB override both.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=""
if [[ $# -gt 0 && $1 != "--" ]]; then
    work=$1
    shift
fi
[[ ${1:-} == "--" ]] && shift

for tool in munged slurmctld slurmd sbatch squeue scontrol snakemake python3; do
    command -v "$tool" >/dev/null || {
        echo "local_cluster.sh: '$tool' not found (apt-get install slurmctld slurmd" \
             "slurm-client munge; pip install snakemake-executor-plugin-slurm)" >&2
        exit 2
    }
done
if [[ $(id -u) -ne 0 ]]; then
    echo "local_cluster.sh: needs root (slurmd, and the link /run/slurm/conf)" >&2
    exit 2
fi
if [[ -e /etc/slurm/slurm.conf ]]; then
    echo "local_cluster.sh: /etc/slurm/slurm.conf exists (a SLURM cluster of this machine);" \
         "srun in the test's jobs would read it" >&2
    exit 2
fi
stale=$(readlink /run/slurm/conf 2>/dev/null) || true
if [[ $stale == */regbench-slurm.*/conf && ! -e $stale ]]; then
    rm /run/slurm/conf  # left by a run that was killed outright
fi
if [[ -e /run/slurm/conf || -L /run/slurm/conf ]]; then
    echo "local_cluster.sh: /run/slurm/conf exists: a slurmd, or another local cluster, runs here" >&2
    exit 2
fi
if [[ -n $work && -e $work ]]; then
    echo "local_cluster.sh: $work already exists; give a new folder" >&2
    exit 2
fi

state=$(mktemp -d "${TMPDIR:-/tmp}/regbench-slurm.XXXXXX")
export SLURM_CONF=$state/conf/slurm.conf
made_run_slurm=false
own_work=false
if [[ -z $work ]]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/regbench-slurm-work.XXXXXX")
    own_work=true
else
    mkdir -p "$work"
    work=$(cd "$work" && pwd)
fi
daemons=()
snakemake_pid=""

# Stop every job, then the daemons (newest first), then remove the state folder.
shut_down() {
    local status=$?
    trap - EXIT
    trap '' INT TERM  # a second interruption must not leave the cluster half stopped
    # Interrupted: Snakemake submits no more (it would wait for its running jobs, so cancel
    # them), then stops when its next status query finds them cancelled.
    [[ -z $snakemake_pid ]] || kill -TERM "$snakemake_pid" 2>/dev/null || true
    if [[ -S $state/munge/munge.socket ]] && scontrol ping >/dev/null 2>&1; then
        squeue --noheader --format=%i | xargs --no-run-if-empty scancel || true
        for _ in $(seq 60); do
            [[ -z $(squeue --noheader --states=RUNNING,COMPLETING --format=%i 2>/dev/null) ]] \
                && break
            sleep 1
        done
    fi
    if [[ -n $snakemake_pid ]]; then
        for _ in $(seq 120); do kill -0 "$snakemake_pid" 2>/dev/null || break; sleep 1; done
        kill -KILL "$snakemake_pid" 2>/dev/null || true
        wait "$snakemake_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 ]]; then
        for log in slurmctld slurmd munged; do
            [[ -s $state/log/$log.log ]] || continue
            echo "--- last lines of $log.log" >&2
            tail -n 20 "$state/log/$log.log" >&2
        done
    fi
    if ! $own_work; then
        mkdir -p "$work/logs/slurm_cluster"
        cp "$state"/log/* "$work/logs/slurm_cluster/" 2>/dev/null || true
    fi
    local index
    for ((index = ${#daemons[@]} - 1; index >= 0; index--)); do
        kill "${daemons[index]}" 2>/dev/null || true
        wait "${daemons[index]}" 2>/dev/null || true
    done
    if [[ $(readlink /run/slurm/conf 2>/dev/null) == "$state/conf" ]]; then
        rm /run/slurm/conf
        ! $made_run_slurm || rmdir /run/slurm || true
    fi
    rm -rf "$state"
    $own_work && rm -rf "$work"
    exit "$status"
}
trap shut_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- the cluster -------------------------------------------------------------------------------
mkdir -p "$state"/{conf,munge,log,ctld,spool}
if [[ ! -d /run/slurm ]]; then
    mkdir /run/slurm
    made_run_slurm=true
fi
ln -s "$state/conf" /run/slurm/conf
chmod 700 "$state/munge"
dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$state/munge/munge.key"
munged --foreground --force --socket="$state/munge/munge.socket" \
    --key-file="$state/munge/munge.key" --pid-file="$state/munge/munged.pid" \
    --seed-file="$state/munge/munged.seed" 2>"$state/log/munged.log" &
daemons+=($!)

host=$(hostname -s)
profile_cores=$(python3 -c 'import sys, yaml
cores = (yaml.safe_load(open(sys.argv[1])) or {}).get("cores")
print(cores if isinstance(cores, int) else 0)' "$repo/workflow/profiles/slurm/config.yaml")
machine_cores=$(nproc)
cpus=${REGBENCH_SLURM_CPUS:-$((machine_cores > profile_cores ? machine_cores : profile_cores))}
machine_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
mem_mb=${REGBENCH_SLURM_MEM_MB:-$((machine_mb > 128000 ? machine_mb : 128000))}
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done

cat >"$SLURM_CONF" <<EOF
ClusterName=regbench-local
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
# a container has no cgroup hierarchy to give a job: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# finished jobs stay visible to squeue for an hour: the plugin's status queries need them
MinJobAge=3600
# jobs keep the nice value of the sbatch that submitted them (a niced snakemake)
PropagatePrioProcess=1
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF

for _ in $(seq 50); do [[ -S $state/munge/munge.socket ]] && break; sleep 0.2; done
slurmctld -D -i >/dev/null 2>&1 &
daemons+=($!)
slurmd -D >/dev/null 2>&1 &
daemons+=($!)
ready=false
for _ in $(seq 60); do
    if [[ $(sinfo --noheader --partition=cpu --format=%t 2>/dev/null) == idle ]]; then
        ready=true
        break
    fi
    sleep 1
done
if ! $ready; then
    echo "local_cluster.sh: the node did not come up within 60 s" >&2
    exit 1
fi
echo "local_cluster.sh: cluster up ($host: $cpus CPUs, $mem_mb MB; state in $state)"
sinfo

# --- the workflow ------------------------------------------------------------------------------
(cd "$repo" && git ls-files -z --cached --others --exclude-standard -- . ':!results' ':!figures') |
    (cd "$repo" && while IFS= read -r -d '' path; do
        if [[ -e $path ]]; then printf '%s\0' "$path"; fi  # a deleted tracked file is skipped
    done) |
    (cd "$repo" && tar --null --files-from=- --create --file=-) |
    tar --extract --file=- --directory="$work"

cd "$work"
start=$(date +%s)
# in the background, so that a signal to this script reaches its trap at once
nice -n 19 snakemake --configfile config/ci.yaml \
    --profile workflow/profiles/slurm --workflow-profile tests/slurm/profile "$@" &
snakemake_pid=$!
status=0
wait "$snakemake_pid" || status=$?
snakemake_pid=""
wall_s=$(($(date +%s) - start))

touch "$state/log/jobcomp.txt"  # written at the first job's end
jobs=$(grep -c '^JobId=' "$state/log/jobcomp.txt" || true)
completed=$(grep -c ' JobState=COMPLETED ' "$state/log/jobcomp.txt" || true)
echo "local_cluster.sh: snakemake exited with $status after ${wall_s} s wall clock;" \
     "SLURM ran $jobs jobs, $completed completed (logs/slurm_cluster/jobcomp.txt in $work)"
exit "$status"
