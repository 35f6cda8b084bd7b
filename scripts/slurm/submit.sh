#!/bin/bash
# Submit the pseudopet participant level as a SLURM job array (one participant per task) and the
# group level as a job that starts when the array has ended, however its tasks ended
# (--dependency=afterany). See docs/hpc.md.
#
# usage: scripts/slurm/submit.sh [options] [BIDS_DIR OUTPUT_DIR]
#   -n, --dry-run          print the two sbatch commands, submit nothing
#   -p, --max-parallel N   tasks running at once (the array's %N; default MAX_PARALLEL or 20;
#                          0 = no limit)
#   -a, --array LIST       only these task indices, e.g. 3,7,10-12 (rerun failed participants;
#                          the group job prints the list); default: every participant
#   --no-group             submit the participant array only
#   -h, --help             this text
# BIDS_DIR and OUTPUT_DIR may also come from the environment, like every other setting of the
# jobs (docs/hpc.md has the table). Also read here:
#   PARTICIPANTS_TSV  participant list (default BIDS_DIR/participants.tsv); task i = its i-th row
#   PARTICIPANT_GPUS  GPUs per participant task (default 1; 0 = CPU only)
#   EXTRA_SBATCH_ARGS extra sbatch options for both jobs, split on blanks
#                     (e.g. "--account=abc --partition=gpu")
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/slurm/lib.sh
source "$here/lib.sh"

usage() {
  # the comment block at the top of this file, from "usage:" on
  sed -n '/^# usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

dry_run=0
max_parallel=${MAX_PARALLEL:-20}
array=""
group=1
positional=()
while (($#)); do
  case $1 in
    -n | --dry-run) dry_run=1 ;;
    -p | --max-parallel)
      (($# > 1)) || pp_die 64 "$1 needs a number"
      max_parallel=$2
      shift
      ;;
    --max-parallel=*) max_parallel=${1#*=} ;;
    -a | --array)
      (($# > 1)) || pp_die 64 "$1 needs a list of task indices"
      array=$2
      shift
      ;;
    --array=*) array=${1#*=} ;;
    --no-group) group=0 ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*) pp_die 64 "unknown option $1 (see --help)" ;;
    *) positional+=("$1") ;;
  esac
  shift
done
case ${#positional[@]} in
  0) ;;
  2)
    BIDS_DIR=${positional[0]}
    OUTPUT_DIR=${positional[1]}
    ;;
  *) pp_die 64 "give both BIDS_DIR and OUTPUT_DIR, or neither (see --help)" ;;
esac
[[ -n ${BIDS_DIR:-} ]] || pp_die 64 "BIDS_DIR is not set (argument or environment variable)"
[[ -n ${OUTPUT_DIR:-} ]] || pp_die 64 "OUTPUT_DIR is not set (argument or environment variable)"
[[ -d $BIDS_DIR ]] || pp_die 66 "BIDS_DIR does not exist: $BIDS_DIR"
[[ $max_parallel =~ ^[0-9]+$ ]] || pp_die 64 "--max-parallel '$max_parallel' is not a number"
gpus=${PARTICIPANT_GPUS:-1}
[[ $gpus =~ ^[0-9]+$ ]] || pp_die 64 "PARTICIPANT_GPUS '$gpus' is not a number"

# absolute paths: the jobs may start in another folder, and containers bind them
BIDS_DIR=$(pp_abspath "$BIDS_DIR")
OUTPUT_DIR=$(pp_abspath "$OUTPUT_DIR")
PARTICIPANTS_TSV=$(pp_abspath "${PARTICIPANTS_TSV:-$BIDS_DIR/participants.tsv}")
# the jobs read these (sbatch --export=ALL); lib.sh is found through PSEUDOPET_SLURM_DIR since
# sbatch runs spooled copies of the batch scripts
export BIDS_DIR OUTPUT_DIR PARTICIPANTS_TSV PSEUDOPET_SLURM_DIR=$here
[[ -z ${WORK_DIR:-} ]] || export WORK_DIR

n=$(pp_participant_count "$PARTICIPANTS_TSV") || exit
((n > 0)) || pp_die 66 "$PARTICIPANTS_TSV lists no participant"
if [[ -n $array ]]; then
  [[ $array =~ ^[0-9][0-9,:-]*(%[0-9]+)?$ ]] ||
    pp_die 64 "--array '$array': give task indices such as 3,7,10-12"
else
  array=0-$((n - 1))
fi
if ((max_parallel > 0)) && [[ $array != *%* ]]; then array+=%$max_parallel; fi

logdir=$OUTPUT_DIR/logs/slurm
extra=()
read -r -a extra <<<"${EXTRA_SBATCH_ARGS:-}"
gres=()
((gpus == 0)) || gres=(--gres="gpu:$gpus")
participant=(sbatch --parsable --export=ALL --array="$array"
  --output="$logdir/%A_%a_participant.out" ${gres[@]+"${gres[@]}"}
  ${extra[@]+"${extra[@]}"} "$here/participant_array.sbatch")
# the group job's sbatch command, after array job $1 (ARRAY_JOB_ID only names it in the report)
set_group_job() {
  group_job=(sbatch --parsable --export="ALL,ARRAY_JOB_ID=$1" --dependency="afterany:$1"
    --output="$logdir/%j_group.out" ${extra[@]+"${extra[@]}"} "$here/group.sbatch")
}

if ((dry_run)); then
  echo "# $n participant(s) in $PARTICIPANTS_TSV"
  pp_print_cmd "${participant[@]}"
  if ((group)); then
    set_group_job '<array-job-id>'
    pp_print_cmd "${group_job[@]}"
  fi
  exit 0
fi

# SLURM does not create the folders of --output files: a missing one loses the logs silently
mkdir -p -- "$logdir"
array_id=$("${participant[@]}")
array_id=${array_id%%;*} # --parsable prints "jobid" or "jobid;cluster"
[[ $array_id =~ ^[0-9]+$ ]] || pp_die 70 "sbatch did not return a job id (got '$array_id')"
echo "participant array: job $array_id ($n participant(s), tasks $array)"
if ((group)); then
  set_group_job "$array_id"
  group_id=$("${group_job[@]}")
  group_id=${group_id%%;*}
  echo "group level: job $group_id (after job $array_id ends)"
fi
echo "logs and exit codes: $logdir"
