/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) for our services,
 * fed from the protobuf-es descriptors so grpcurl and friends need no .proto files.
 */
import { toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";

type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];

/** Every file `files` needs, dependencies first. */
function withDependencies(files: readonly DescFile[]): DescFile[] {
  const ordered: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (file: DescFile) => {
    if (seen.has(file.name)) return;
    seen.add(file.name);
    for (const dependency of file.dependencies) visit(dependency);
    ordered.push(file);
  };
  for (const file of files) visit(file);
  return ordered;
}

/** Adds the reflection service to `server`, describing the services in `files`. */
export function addReflection(server: grpc.Server, files: readonly DescFile[]): void {
  const fileDescriptorProtos = withDependencies(files).map((file) => Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)));
  const definition = { epochd: { fileDescriptorProtos } } as unknown as PackageDefinition;
  new ReflectionService(definition).addToServer(server);
}
