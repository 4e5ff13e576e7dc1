package crishim

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The shim has no cgroups of its own, so it cannot measure usage; kubelet still asks for stats
// (its summary and eviction managers) and logs an error every cycle on Unimplemented. These
// answer with each known container and pod, a timestamp and no usage figures, which kubelet
// accepts as "nothing measured".

func containerStats(c *runtimeapi.Container, now int64) *runtimeapi.ContainerStats {
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id: c.GetId(), Metadata: c.GetMetadata(), Labels: c.GetLabels(), Annotations: c.GetAnnotations(),
		},
		Cpu:           &runtimeapi.CpuUsage{Timestamp: now},
		Memory:        &runtimeapi.MemoryUsage{Timestamp: now},
		WritableLayer: &runtimeapi.FilesystemUsage{Timestamp: now},
	}
}

// ContainerStats answers for one container (NotFound when unknown).
func (s *Server) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	if _, err := s.lookupContainer(req.GetContainerId()); err != nil {
		return nil, err
	}
	for _, c := range s.listContainers(&runtimeapi.ContainerFilter{Id: req.GetContainerId()}) {
		return &runtimeapi.ContainerStatsResponse{Stats: containerStats(c, time.Now().UnixNano())}, nil
	}
	return &runtimeapi.ContainerStatsResponse{}, nil
}

// ListContainerStats answers for every container matching the filter.
func (s *Server) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	cf := &runtimeapi.ContainerFilter{Id: f.GetId(), PodSandboxId: f.GetPodSandboxId(), LabelSelector: f.GetLabelSelector()}
	now := time.Now().UnixNano()
	resp := &runtimeapi.ListContainerStatsResponse{}
	for _, c := range s.listContainers(cf) {
		resp.Stats = append(resp.Stats, containerStats(c, now))
	}
	return resp, nil
}

func (s *Server) podStats(p *runtimeapi.PodSandbox, now int64) *runtimeapi.PodSandboxStats {
	st := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: p.GetId(), Metadata: p.GetMetadata(), Labels: p.GetLabels(), Annotations: p.GetAnnotations()},
		Linux: &runtimeapi.LinuxPodSandboxStats{
			Cpu: &runtimeapi.CpuUsage{Timestamp: now}, Memory: &runtimeapi.MemoryUsage{Timestamp: now},
			Network: &runtimeapi.NetworkUsage{Timestamp: now}, Process: &runtimeapi.ProcessUsage{Timestamp: now},
		},
	}
	for _, c := range s.listContainers(&runtimeapi.ContainerFilter{PodSandboxId: p.GetId()}) {
		st.Linux.Containers = append(st.Linux.Containers, containerStats(c, now))
	}
	return st
}

// PodSandboxStats answers for one pod (NotFound when unknown).
func (s *Server) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	if _, err := s.lookupSandbox(req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	for _, p := range s.listSandboxes(&runtimeapi.PodSandboxFilter{Id: req.GetPodSandboxId()}) {
		return &runtimeapi.PodSandboxStatsResponse{Stats: s.podStats(p, time.Now().UnixNano())}, nil
	}
	return &runtimeapi.PodSandboxStatsResponse{}, nil
}

// ListPodSandboxStats answers for every pod matching the filter.
func (s *Server) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	now := time.Now().UnixNano()
	resp := &runtimeapi.ListPodSandboxStatsResponse{}
	for _, p := range s.listSandboxes(&runtimeapi.PodSandboxFilter{Id: f.GetId(), LabelSelector: f.GetLabelSelector()}) {
		resp.Stats = append(resp.Stats, s.podStats(p, now))
	}
	return resp, nil
}
