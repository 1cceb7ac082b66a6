import type { Handler } from '../http/operation.js';
import { projectEtag, type ProjectView } from '../services/projects.js';
import { apiBasePath } from '../services/platform.js';
import { pageOf } from './paging.js';
import { page, presentMember, presentProject } from './present.js';

export const listProjects: Handler<'listProjects'> = async ({ query }, { principal, services }) => ({
  status: 200,
  body: page(
    await services.projects.list(principal, { kind: query.kind, all: query.all }, pageOf(query)),
    presentProject,
  ),
});

export const createProject: Handler<'createProject'> = async ({ body }, ctx) => {
  const created = (project: ProjectView) => ({
    status: 201 as const,
    body: presentProject(project),
    etag: projectEtag(project),
    location: `${apiBasePath}/projects/${project.id}`,
  });
  ctx.answerWith(created);
  return created(
    await ctx.services.projects.create(ctx.principal, {
      id: body.id,
      name: body.name,
      description: body.description,
      regionId: body.region_id,
    }),
  );
};

export const getProject: Handler<'getProject'> = async ({ params }, { principal, services }) => {
  const project = await services.projects.get(principal, params.projectId);
  return { status: 200, body: presentProject(project), etag: projectEtag(project) };
};

export const updateProject: Handler<'updateProject'> = async (
  { params, body, headers },
  { principal, services },
) => {
  const project = await services.projects.update(principal, params.projectId, body, headers['if-match']);
  return { status: 200, body: presentProject(project), etag: projectEtag(project) };
};

export const deleteProject: Handler<'deleteProject'> = async (
  { params, headers },
  { principal, services },
) => {
  await services.projects.delete(principal, params.projectId, headers['if-match']);
  return { status: 204 };
};

export const listProjectMembers: Handler<'listProjectMembers'> = async (
  { params, query },
  { principal, services },
) => ({
  status: 200,
  body: page(await services.projects.listMembers(principal, params.projectId, pageOf(query)), presentMember),
});

export const setProjectMember: Handler<'setProjectMember'> = async (
  { params, body },
  { principal, services },
) => {
  const { member, created } = await services.projects.setMember(
    principal,
    params.projectId,
    params.userId,
    body.role,
  );
  return created
    ? { status: 201, body: presentMember(member) }
    : { status: 200, body: presentMember(member) };
};

export const removeProjectMember: Handler<'removeProjectMember'> = async (
  { params },
  { principal, services },
) => {
  await services.projects.removeMember(principal, params.projectId, params.userId);
  return { status: 204 };
};
