# The lps image: the one static binary, every role (the subcommand picks it). Nothing is pulled
# and nothing runs at build time, so it builds offline with the classic builder or BuildKit:
#
#   make image                     # = CGO_ENABLED=0 go build -tags noexperiment ... -o lps . && docker build -t lps:latest .
#
# -tags noexperiment leaves out lps experiment (its report's plotting library and fonts are half
# of a full binary); every role and lps up, load, probe are in.
#
# The binary must be static (CGO_ENABLED=0): the image has no libc, no shell, no CA bundle.
FROM scratch

COPY lps /usr/local/bin/lps

# The LPS compose file mounts the broker's named volume here. A new volume takes the owner of
# the image's directory, so the non-root user can create its --data-dir (/var/lib/lps/broker).
COPY --chown=65532:65532 compose/broker-volume.txt /var/lib/lps/README.txt

ENV PATH=/usr/local/bin
# A numeric non-root user (the "nonroot" id of distroless images); scratch has no /etc/passwd.
USER 65532:65532
ENTRYPOINT ["lps"]
CMD ["--help"]
