FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY lua ./lua
COPY examples ./examples
RUN pip install --no-cache-dir .
EXPOSE 7575
CMD ["redisq", "serve", "--host", "0.0.0.0"]
