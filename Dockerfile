# The operator's container image, for the Helm chart's StatefulSet.
# (This development machine has no Docker engine, so CI does not build it; the
# e2e tests run the same package as a local process with the chart's identity.)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
ENTRYPOINT ["gpu-budget-operator"]
