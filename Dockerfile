# The Spool broker image: nothing but our statically linked binary.
# Built by `cargo xtask image`, which stages the binary (and an empty data directory) as the
# build context; see docs/docker.md.
FROM scratch
COPY spool /spool
COPY --chown=65532:65532 data /data
ENV SPOOL_LISTEN=0.0.0.0:9092 \
    SPOOL_ADVERTISED=127.0.0.1:9092 \
    SPOOL_DATA_DIR=/data \
    SPOOL_BOOTSTRAP=127.0.0.1:9092
USER 65532:65532
VOLUME /data
EXPOSE 9092
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=2s --retries=3 CMD ["/spool", "health"]
ENTRYPOINT ["/spool"]
CMD ["serve"]
