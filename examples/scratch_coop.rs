fn main() {
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    for a in pollster::block_on(inst.enumerate_adapters(wgpu::Backends::VULKAN)) {
        let i = a.get_info();
        println!(
            "{} {:?} sg {}..{} coop {}",
            i.name,
            i.backend,
            i.subgroup_min_size,
            i.subgroup_max_size,
            a.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        );
        for p in a.cooperative_matrix_properties() {
            println!("  {:?}", p);
        }
    }
}
