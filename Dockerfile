# streamlearn image for docker-compose.yml (and for deployments).
FROM python:3.11-slim
WORKDIR /app
# torch first and pinned: an unpinned resolve may pull a much larger build.
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md ./
COPY stream stream
COPY learners learners
COPY drift drift
COPY serving serving
RUN pip install --no-cache-dir '.[fast]'
ENTRYPOINT ["streamlearn"]
CMD ["--help"]
