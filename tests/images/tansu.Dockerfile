# Kafka-protocol broker image for integration tests, built offline by
# .ci/services.sh. tansu is a static-pie binary, so the image needs nothing
# else: no libc, no shell, no CA bundle (it only speaks plaintext on loopback).
# Storage defaults to memory://, so a restarted container starts empty.
FROM scratch
COPY tansu /usr/local/bin/tansu
# scratch has no directories at all; /tmp is the one many programs assume.
COPY tmp/ /tmp/
ENTRYPOINT ["/usr/local/bin/tansu"]
CMD ["broker"]
