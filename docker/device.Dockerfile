# The device agent alone: numpy, grpcio and protobuf (and Pillow for image bytes), no torch. Multi-arch:
#   docker buildx build -f docker/device.Dockerfile --platform linux/amd64,linux/arm64,linux/arm/v7 \
#          -t REGISTRY/qpart-device:latest --push .
# linux/arm/v7 (32-bit Raspberry Pi OS) takes its wheels from piwheels, which builds them for Debian
# bookworm armhf: PyPI has no armv7 grpcio wheel, and there is no armv7 torch at all.
# Run it with the daemon's configuration and its socket directory mounted:
#   docker run -d --name qpart-device -v /etc/qpart:/etc/qpart:ro -v /run/qpart:/run/qpart \
#          -v qpart-heads:/var/cache/qpart REGISTRY/qpart-device:latest
# On a Jetson build FROM an L4T image instead (see the README, "On a Jetson"):
#   docker build -f docker/device.Dockerfile --build-arg BASE=dustynv/l4t-pytorch:r36.2.0 .
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG TARGETARCH
ARG TARGETVARIANT
WORKDIR /opt/qpart-src
COPY pyproject.toml README.md ./
COPY protos protos
COPY common common
COPY device device
# setuptools lists every qpart package; their sources are small, and nothing of them is imported here
COPY server server
COPY cli cli
COPY testbed testbed
RUN if [ "${TARGETARCH}${TARGETVARIANT}" = "armv7" ]; then \
        export PIP_EXTRA_INDEX_URL=https://www.piwheels.org/simple; fi \
 && pip install --no-cache-dir --prefer-binary '.[images]' \
 && python -c "import qpart.device"
COPY deploy/device.toml /etc/qpart/device.toml
ENV PYTHONUNBUFFERED=1
HEALTHCHECK --interval=10s --timeout=3s CMD python -m qpart.common.health unix:/run/qpart/device.sock
ENTRYPOINT ["qpart-device"]
CMD ["serve", "--config", "/etc/qpart/device.toml"]
