# syntax=docker/dockerfile:1
# warmpool's image: the controller, and the copier its cache Jobs run (`warmpool cache save|restore`).
# The binary is built outside the image by `make image-binary` (static, stripped, one per arch), so
# this Dockerfile only packages it:
#
#   make image-binary VERSION=v0.1.0
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/warmpool/warmpool:v0.1.0 .
#
# distroless/static has no shell, libc or package manager; :nonroot runs as uid/gid 65532, which
# the chart's securityContext requires. The cache Jobs override the user to 0 (they must read and
# write the engine's root-owned cache on the node), in their own pod spec.
FROM gcr.io/distroless/static-debian12:nonroot

ARG TARGETARCH
COPY --chmod=0555 bin/linux/${TARGETARCH}/warmpool /warmpool

USER 65532:65532
ENTRYPOINT ["/warmpool"]
CMD ["controller"]
