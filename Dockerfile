# syntax=docker/dockerfile:1
# Build stage: install every dependency, compile TypeScript.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY protocols ./protocols
COPY mesh ./mesh
RUN npx tsc -p tsconfig.build.json

# Runtime stage: production dependencies and the compiled output only.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/protocols ./dist/protocols
COPY --from=build /app/dist/mesh ./dist/mesh
USER node
EXPOSE 15000 15006 15443
ENTRYPOINT ["node", "dist/src/cli.js"]
