# shellcheck shell=bash
# Functions shared by the pseudopet SLURM scripts (sourced, never run). Everything that decides
# something (which participant a task runs, how many GPUs a node has, where the rendezvous is,
# which participants failed) lives here so that tests/scripts/test_slurm.py exercises the very
# code the jobs run. Exit codes follow pseudopet's: 64 usage, 65 bad data, 66 input missing.

# Print a message on stderr and exit with CODE.
# Usage: pp_die CODE MESSAGE...
pp_die() {
  local code=$1
  shift
  printf 'pseudopet-slurm: error: %s\n' "$*" >&2
  exit "$code"
}

# Print a message on stderr.
pp_log() {
  printf 'pseudopet-slurm: %s\n' "$*" >&2
}

# Print a command as one shell-quoted line (what a dry run shows, and what the job log records).
# Usage: pp_print_cmd ARG...
pp_print_cmd() {
  local arg out="" sq="'" esc="'\\''"
  for arg in "$@"; do
    # plain words as they are, anything else in single quotes (readable, and safe to paste)
    if [[ ! $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      arg="'${arg//"$sq"/$esc}'"
    fi
    out+=${out:+ }$arg
  done
  printf '%s\n' "$out"
}

# An absolute path without touching the file system (the folder may not exist yet, and
# container bind mounts need absolute paths).
# Usage: pp_abspath PATH
pp_abspath() {
  local path=$1
  [[ $path == /* ]] || path="$PWD/$path"
  while [[ $path == */ && $path != / ]]; do path=${path%/}; done
  printf '%s\n' "$path"
}

# Write TEXT (plus a newline) to FILE atomically: a temporary file in the same folder renamed
# over FILE, so a reader (the group job) never sees half a file even when tasks end together.
# Usage: pp_write_atomic FILE TEXT
pp_write_atomic() {
  local target=$1 text=$2 tmp mode
  tmp=$(mktemp "${target}.tmp.XXXXXX")
  printf '%s\n' "$text" >"$tmp"
  # mktemp creates mode 0600; give the file the permissions the umask would (shared projects)
  printf -v mode '%o' $((0666 & ~$(umask)))
  chmod "$mode" "$tmp"
  mv -f -- "$tmp" "$target"
}

# The participant labels of a participants.tsv, one per line, in file order, without 'sub-'.
# The participant_id column is found by its header name (its position varies between datasets);
# CRLF line endings, a UTF-8 byte-order mark and blank lines are ignored; a label listed twice is
# kept once (two tasks writing one participant would clash). Labels must be alphanumeric (BIDS).
# Usage: pp_participant_labels TSV
pp_participant_labels() {
  local tsv=$1 text nl=$'\n'
  [[ -f $tsv ]] || pp_die 66 "participants file not found: $tsv (set PARTICIPANTS_TSV)"
  # awk exits 3 without a participant_id column and 4 on a label that is not alphanumeric
  text=$(LC_ALL=C awk -F '\t' '
    NR == 1 { sub(/^\357\273\277/, "") }
    { sub(/\r$/, "") }
    /^[[:space:]]*$/ { next }
    col == 0 {
      for (i = 1; i <= NF; i++) {
        name = $i
        gsub(/^[[:space:]]+|[[:space:]]+$/, "", name)
        if (name == "participant_id") { col = i; break }
      }
      if (col == 0) exit 3
      next
    }
    {
      label = $col
      gsub(/^[[:space:]]+|[[:space:]]+$/, "", label)
      sub(/^sub-/, "", label)
      if (label == "") next
      # the offending label goes last on stdout, for the message below
      if (label !~ /^[A-Za-z0-9]+$/) { print label; exit 4 }
      if (!(label in seen)) { seen[label] = 1; print label }
    }' "$tsv") || {
    case $? in
      3) pp_die 65 "$tsv has no participant_id column in its header line" ;;
      4) pp_die 65 "$tsv: participant_id '${text##*"$nl"}' is not 'sub-' + letters and digits" \
        "(BIDS labels are alphanumeric)" ;;
      *) pp_die 66 "cannot read $tsv" ;;
    esac
  }
  [[ -z $text ]] || printf '%s\n' "$text"
}

# How many participants a participants.tsv lists (the size of the job array).
# Usage: pp_participant_count TSV
pp_participant_count() {
  local text
  text=$(pp_participant_labels "$1") || exit
  if [[ -z $text ]]; then
    echo 0
  else
    local -a labels
    mapfile -t labels <<<"$text"
    echo "${#labels[@]}"
  fi
}

# The label of the INDEX-th participant (0-based, header excluded) of a participants.tsv:
# array task INDEX runs this participant. An index past the list is a usage error (exit 64).
# Usage: pp_participant_label TSV INDEX
pp_participant_label() {
  local tsv=$1 index=$2 text
  [[ $index =~ ^[0-9]+$ ]] || pp_die 64 "array task index '$index' is not a non-negative integer"
  text=$(pp_participant_labels "$tsv") || exit
  local -a labels=()
  [[ -z $text ]] || mapfile -t labels <<<"$text"
  # 10# : a task index such as 08 is decimal, not octal
  if ((10#$index >= ${#labels[@]})); then
    pp_die 64 "array task $index has no participant: $tsv lists ${#labels[@]} participant(s)" \
      "(tasks 0-$((${#labels[@]} - 1))); submit with --array=0-$((${#labels[@]} - 1))"
  fi
  printf '%s\n' "${labels[10#$index]}"
}

# The 0-based index of LABEL in a participants.tsv (what --array takes to rerun it), or nothing.
# Usage: pp_participant_index TSV LABEL
pp_participant_index() {
  local text i=0 label
  text=$(pp_participant_labels "$1") || exit
  while IFS= read -r label; do
    if [[ $label == "${2#sub-}" ]]; then
      echo "$i"
      return 0
    fi
    i=$((i + 1))
  done <<<"$text"
}

# The number of GPUs SLURM gave this node: SLURM_GPUS_ON_NODE, else SLURM_GPUS_PER_NODE
# ("4" or "a100:4"), else the entries of CUDA_VISIBLE_DEVICES, else 0.
pp_gpu_count() {
  local n=${SLURM_GPUS_ON_NODE:-}
  if [[ $n =~ ^[0-9]+$ ]]; then
    echo "$n"
    return
  fi
  n=${SLURM_GPUS_PER_NODE:-}
  n=${n##*:}
  if [[ $n =~ ^[0-9]+$ ]]; then
    echo "$n"
    return
  fi
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} && ${CUDA_VISIBLE_DEVICES} != NoDevFiles ]]; then
    local -a ids
    IFS=, read -r -a ids <<<"$CUDA_VISIBLE_DEVICES"
    echo "${#ids[@]}"
    return
  fi
  echo 0
}

# Whether the container gets the host's GPU driver (apptainer --nv): CONTAINER_NV=1 or 0, or
# auto (default) = when SLURM gave this job a GPU. Prints 1 or 0.
pp_want_nv() {
  case ${CONTAINER_NV:-auto} in
    1 | yes | true) echo 1 ;;
    0 | no | false) echo 0 ;;
    auto) if (($(pp_gpu_count) > 0)); then echo 1; else echo 0; fi ;;
    *) pp_die 64 "CONTAINER_NV must be auto, 1 or 0 (got '${CONTAINER_NV}')" ;;
  esac
}

# The first host name of a SLURM node list ("node[01-04]" -> node01), via scontrol.
# Usage: pp_first_host NODELIST
pp_first_host() {
  local hosts
  hosts=$(scontrol show hostnames "$1") || pp_die 69 "scontrol cannot expand the node list '$1'"
  hosts=${hosts%%$'\n'*}
  [[ -n $hosts ]] || pp_die 69 "scontrol returned no host for the node list '$1'"
  printf '%s\n' "$hosts"
}

# The recorded exit code of each participant, from the files the array tasks write
# (<array job>_<task>_sub-<label>.exitcode in DIR): one line per participant,
# "label<TAB>exit code<TAB>array job<TAB>task", keeping the latest record (highest job id, then
# task), so that a rerun of the failed participants supersedes their earlier failures.
# Usage: pp_latest_status DIR
pp_latest_status() {
  local dir=$1 file base job task label code
  [[ -d $dir ]] || return 0
  local -a rows=()
  for file in "$dir"/*_sub-*.exitcode; do
    [[ -f $file ]] || continue
    base=${file##*/}
    base=${base%.exitcode}
    [[ $base =~ ^([0-9]+)_([0-9]+)_sub-([A-Za-z0-9]+)$ ]] || continue
    job=${BASH_REMATCH[1]}
    task=${BASH_REMATCH[2]}
    label=${BASH_REMATCH[3]}
    code=$(tr -d '[:space:]' <"$file")
    [[ $code =~ ^[0-9]+$ ]] || code=255 # unreadable record: count it as a failure
    rows+=("$label"$'\t'"$code"$'\t'"$job"$'\t'"$task")
  done
  ((${#rows[@]})) || return 0
  printf '%s\n' "${rows[@]}" | sort -t $'\t' -k3,3n -k4,4n |
    awk -F '\t' '{ last[$1] = $0 } END { for (l in last) print last[l] }' | sort
}
