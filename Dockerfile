# Operator and compression image: `lms operator` runs the controller, `lms compress`
# runs inside the compression Job. CPU-only PyTorch keeps the image small; Triton
# itself runs from nvcr.io/nvidia/tritonserver, not from this image. Only operator/ is copied:
# the test harness (harness/, pod runner and fault proxy) is a separate package and stays out.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/lms \
 && /opt/lms/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[compress]" \
 && /opt/lms/bin/lms --version

FROM python:3.11-slim
ENV PATH=/opt/lms/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/lms
RUN groupadd --gid 65532 lms \
 && useradd --uid 65532 --gid 65532 --create-home --home-dir /home/lms --shell /usr/sbin/nologin lms
COPY --from=build /opt/lms /opt/lms
USER 65532:65532
WORKDIR /home/lms
ENTRYPOINT ["lms"]
CMD ["--help"]
