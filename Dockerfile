FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY services ./services
COPY plugins ./plugins
COPY shared ./shared
COPY streamlit_app ./streamlit_app
RUN pip install --no-cache-dir -c constraints.txt '.[otel]'
EXPOSE 11435 8501
CMD ["herd"]
