#!/bin/sh
# Print the current digest of every third-party image we run, to move a pin on purpose:
#   docker/pin-images.sh            (needs `docker buildx` and access to Docker Hub)
# then paste the digests into docker/Dockerfile (PYTHON_IMAGE), docker/compose.yaml and
# docker/k8s/10-chroma.yaml, rebuild, and run the tests. A pin is the image index (all
# architectures), so the same line works on amd64 and arm64 nodes.
set -eu
for image in python:3.11.16-slim-bookworm chromadb/chroma:1.5.9 nginx:1.27-alpine; do
    digest=$(docker buildx imagetools inspect "$image" --format '{{json .Manifest.Digest}}' | tr -d '"')
    echo "$image@$digest"
done
