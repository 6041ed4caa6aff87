# One image for every role: `regtrain api`, `regtrain worker [--gpu N]` (see docker-compose.yml).
#
# torch is installed first, from the wheel index of the build you want, so that the layer is
# cached across code changes and the API/CPU image does not carry gigabytes of CUDA:
#   docker build -t regtrain:cpu .                                   (default: CPU wheels)
#   docker build -t regtrain:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .
# The CUDA wheels bundle their CUDA runtime, so a slim base is enough; the host needs only the
# NVIDIA driver and the NVIDIA container toolkit.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    REGTRAIN_DATA_DIR=/data

WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.4,<2.14"

# The client first (regtrain depends on it; it is not on PyPI), then regtrain.
COPY clients/python ./clients/python
RUN pip install ./clients/python
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
RUN pip install .

# Not root: checkpoints and uploads on the shared volume belong to uid 1000.
RUN useradd --uid 1000 --create-home regtrain && mkdir -p /data && chown regtrain /data
USER regtrain
VOLUME /data
EXPOSE 8000

ENTRYPOINT ["regtrain"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
