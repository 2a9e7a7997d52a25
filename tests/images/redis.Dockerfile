# Redis image for integration tests, built offline by .ci/services.sh from
# Debian's redis-server: the script stages the binary and every shared library
# `ldd` lists (dynamic loader included) under rootfs/, at their host paths.
FROM scratch
COPY rootfs/ /
# INVARIANT: the binary is staged as a regular file named redis-server. On
# Debian /usr/bin/redis-server is a symlink to redis-check-rdb, and redis picks
# its personality from argv[0], so a copied symlink would run the RDB checker.
ENTRYPOINT ["/usr/bin/redis-server"]
CMD ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
